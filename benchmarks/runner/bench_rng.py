"""Per-step key derivation: `random_utils` (reused, reseeded RandomState) vs upstream's.

The runner derives `fold_in(rng, step)` then `split(..., 4)` before every step, on the
clock (upstream semantics, values fixed by the contract). Upstream builds a fresh
`np.random.RandomState(seed)` for each call; ours reseeds one cached generator, which
yields the same stream. Both providers compute the same 1000 steps' keys (asserted equal).
"""

import numpy as np
import pytest
from _harness import rounds

from algoperf import random_utils as prng

STEPS = 1000
MAX = 2**31 - 1


def _upstream_fold_in(seed, data):
    rng = np.random.RandomState(seed=[int(s) % MAX for s in seed])
    return [rng.randint(0, MAX, dtype=np.uint32), data]


def _upstream_split(seed, num):
    rng = np.random.RandomState(seed=[int(s) % MAX for s in seed])
    return rng.randint(0, MAX, dtype=np.uint32, size=[num, 2])


PROVIDERS = {
    'ours_reseeded': lambda key, step: prng.split(prng.fold_in(key, step), 4),
    'upstream_fresh_randomstate': lambda key, step: _upstream_split(_upstream_fold_in(key, step), 4),
}


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_step_key_derivation(benchmark, provider):
    fn, key = PROVIDERS[provider], prng.PRNGKey(0)
    benchmark.group = f'fold_in + split(4), {STEPS} steps per round'
    benchmark.extra_info.update(peer='upstream_fresh_randomstate', items=STEPS, item_unit='step')
    keys = benchmark.pedantic(lambda: [fn(key, s) for s in range(STEPS)], rounds=rounds(10), warmup_rounds=1)
    expected = [PROVIDERS['upstream_fresh_randomstate'](key, s) for s in range(0, STEPS, 97)]
    for got, want in zip(keys[::97], expected):
        np.testing.assert_array_equal(got, want)
