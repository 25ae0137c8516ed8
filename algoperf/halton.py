"""Quasi-random (Halton) hyperparameter search, seeded and reproducible.

The sequence construction is upstream's (`algoperf/halton.py`, after
arXiv:1706.03200): one scrambled van der Corput sequence per dimension with a
prime base (the primes just below 1000), digit permutation and shift drawn from
`RandomState(base)`, the first 100 points skipped. Upstream then shuffles the
points with numpy's *unseeded* global RNG, so hyperparameter order is not
reproducible and can differ between DDP ranks; here the final shuffle uses
`RandomState(seed)`, so one seed gives one search on every rank.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import numpy as np


def generate_primes(n: int) -> List[int]:
    """Odd primes below `n` (sieve of Sundaram)."""
    half = (n - 2) // 2
    sieve = [False] * (half + 1)
    for i in range(1, half + 1):
        j = i
        while i + j + 2 * i * j <= half:
            sieve[i + j + 2 * i * j] = True
            j += 1
    return [2 * i + 1 for i in range(1, half + 1) if not sieve[i]]


def _dimension(num_samples: int, base: int) -> List[float]:
    """Scrambled, shifted radical-inverse sequence in base `base`."""
    rng = np.random.RandomState(base)
    digits = list(range(1, base))
    rng.shuffle(digits)
    digits = [0] + digits
    shift = rng.random_sample()
    points = []
    for i in range(1, num_samples + 1):
        value, denominator = 0.0, base
        while i:
            value += digits[i % base] / denominator
            denominator *= base
            i //= base
        points.append(math.fmod(value + shift, 1.0))
    return points


def generate_sequence(num_samples: int, num_dims: int, seed: int, skip: int = 100) -> List[Sequence[float]]:
    """`num_samples` Halton points in [0, 1)^num_dims, shuffled by `seed`."""
    if skip < 0:
        raise ValueError(f'skip must be non-negative, got {skip}')
    primes: List[int] = []
    attempt = 1
    while len(primes) < num_dims + 1:
        primes = generate_primes(1000 * attempt)
        attempt += 1
    bases = primes[-num_dims - 1 : -1]
    columns = [_dimension(num_samples + skip, b)[skip:] for b in bases]
    points = list(zip(*columns))
    np.random.RandomState(seed % (2**32)).shuffle(points)
    return points


def scale_point(halton_point: float, space: dict) -> object:
    """Map a point in [0, 1) to a value of one validated search dimension."""
    if 'feasible_points' in space:
        feasible = space['feasible_points']
        return feasible[int(math.floor(halton_point * len(feasible)))]
    lo, hi = space['min'], space['max']
    if space['scaling'] == 'log':
        return lo * math.exp(halton_point * math.log(hi / lo))
    return halton_point * (hi - lo) + lo
