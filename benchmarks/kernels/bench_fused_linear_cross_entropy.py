"""The LM's tied head + cross-entropy, forward + backward: fused (chunked) vs plain.

Run (from the repository root, on a quiet machine; ~2.5 GB of memory)::

    python -m pytest benchmarks/kernels/bench_fused_linear_cross_entropy.py \
        --benchmark-json=benchmarks/results/fused_linear_ce_<hw>_<yyyymmdd>.json

Smoke run (tiny shapes, numbers not comparable): ``algoperf bench --quick`` or
``ALGOPERF_BENCH_QUICK=1`` as set by it (``_harness.quick()``).

Shape: finewebedu_lm's head at full vocabulary, V = 50257, D = 1024, with a CPU-sized
batch of N = 2048 tokens (2 sequences of 1024), fp32 on CPU, label smoothing 0.1 (the
target-setting value), no weights (a train batch). One round = what a train step does
with the head: loss = per-token losses summed / N, backward to hidden and the weight.

Providers (one group):
    fused: ``kernels.fused_linear_cross_entropy`` (default chunk: 333 rows on CPU).
    plain (peer): ``hidden @ weight.T`` then ``F.cross_entropy(reduction='none')``,
        i.e. ``fused_linear_cross_entropy_reference``, upstream's head.

Peak memory (``extra_info['report']['peak_mib']``, and ``peak_vs_peer``): measured in a
fresh subprocess per provider as the peak resident set (``ru_maxrss``) during one
forward + backward minus the resident set just before it, after the inputs exist and a
tiny warm-up has initialised the BLAS and allocator. Both providers' peaks include the
206 MB weight gradient. RSS rather than tracemalloc or torch.profiler: tracemalloc does not
see torch's allocations, and the profiler's memory events add overhead and report
allocator events, not the process peak; glibc returns large (> 128 KiB, mmap'd) blocks to
the OS on free, so RSS follows the live tensors. Targets (issue 15): peak >= 4x lower, time
>= 1.0x the peer on CPU.
"""

import os
import subprocess
import sys

import pytest
import torch
from _harness import quick, rounds

from kernels.fused_linear_cross_entropy import (
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
)

N, D, V = (128, 64, 50257) if quick() else (2048, 1024, 50257)
LABEL_SMOOTHING = 0.1
ROUNDS = 5
PROVIDERS = {'fused': fused_linear_cross_entropy, 'plain': fused_linear_cross_entropy_reference}
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PEAK_SCRIPT = r"""
import resource, sys, torch
from kernels.fused_linear_cross_entropy import (
    fused_linear_cross_entropy, fused_linear_cross_entropy_reference)
provider, n, d, v, alpha = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
fn = {'fused': fused_linear_cross_entropy, 'plain': fused_linear_cross_entropy_reference}[provider]
def step(h, w, t):
    loss = fn(h, w, t, None, alpha).sum() / t.numel()
    loss.backward()
g = torch.Generator().manual_seed(0)
small = [torch.randn(8, d, generator=g).requires_grad_(), torch.randn(v, d, generator=g).requires_grad_(),
         torch.randint(0, v, (8,), generator=g)]
step(*small)  # warm-up: BLAS threads, allocator, autograd engine
del small
h = torch.randn(n, d, generator=g).requires_grad_()
w = (0.02 * torch.randn(v, d, generator=g)).requires_grad_()
t = torch.randint(0, v, (n,), generator=g)
with open('/proc/self/statm') as f:
    before = int(f.read().split()[1]) * resource.getpagesize()
step(h, w, t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
print(max(0, peak - before))
"""


def _peak_bytes(provider: str) -> int:
    """Peak RSS growth of one forward + backward, in a fresh process (module docstring)."""
    result = subprocess.run(
        [sys.executable, '-c', _PEAK_SCRIPT, provider, str(N), str(D), str(V), str(LABEL_SMOOTHING)],
        cwd=_REPO, capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    return int(result.stdout.split()[-1])


@pytest.fixture(scope='module')
def peaks():
    return {p: _peak_bytes(p) for p in PROVIDERS}


@pytest.fixture(scope='module')
def inputs():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(N, D, generator=g).requires_grad_()
    weight = (0.02 * torch.randn(V, D, generator=g)).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    return hidden, weight, targets


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_fused_linear_cross_entropy(benchmark, inputs, peaks, provider):
    hidden, weight, targets = inputs
    fn = PROVIDERS[provider]

    def run():
        hidden.grad = weight.grad = None
        loss = fn(hidden, weight, targets, None, LABEL_SMOOTHING).sum() / N
        loss.backward()

    benchmark.group = f'linear_ce_n{N}_d{D}_v{V}'
    benchmark.extra_info.update(
        device='cpu',
        peer='plain',
        items=N,
        item_unit='token',
        report={
            'peak_mib': round(peaks[provider] / 2**20, 1),
            'peak_vs_peer': round(peaks['plain'] / max(peaks[provider], 1), 2),
        },
    )
    benchmark.pedantic(run, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
    hidden.grad = weight.grad = None
