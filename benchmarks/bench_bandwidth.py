"""Streaming memory bandwidth (STREAM copy and triad with torch ops): the roofline for
memory-bound kernels such as fused optimizer steps and gradient-norm reductions.

Run (from the repository root, on a quiet machine)::

    python -m algoperf bench --suite bandwidth

Providers (``algoperf.bandwidth``, STREAM byte counting):
    copy: ``b.copy_(a)``, 2 x 256 MiB moved per call on CPU (2 x 1 GiB on CUDA).
    triad: ``torch.add(b, c, alpha=3, out=a)``, 3 x 256 MiB (3 x 1 GiB on CUDA).

One group per device (cpu, and cuda when available). The report's GB/s column is
bytes moved / median; the JSON's machine_info also carries the best-of-N probe that other
suites use as their denominator. On the 2-vCPU AMD EPYC VM (torch 2.13 CPU) expect ~33 GB/s
for copy on a quiet machine (``../shared/reference/perf_anchors.md``); another process on
the 2 cores can cut it several-fold.
"""

import pytest
import torch
from _harness import record_bytes_moved, rounds

from algoperf import bandwidth

DEVICES = ('cpu',) + ('cuda',) * torch.cuda.is_available()
# One CPU pass is ~16 ms (copy) to ~25 ms (triad); 20 rounds keep a provider under ~1 s.
ROUNDS = 20
WARMUP_ROUNDS = 2


@pytest.fixture(scope='module', params=DEVICES)
def arrays(request):
    device = request.param
    nbytes = bandwidth.CUDA_NBYTES if device == 'cuda' else bandwidth.CPU_NBYTES
    yield device, bandwidth.allocate(device, nbytes)
    if device == 'cuda':
        torch.cuda.empty_cache()


@pytest.mark.parametrize('provider', list(bandwidth.KERNELS))
def test_stream(benchmark, arrays, provider):
    device, (a, b, c) = arrays
    kernel = bandwidth.KERNELS[provider]
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    def run():
        kernel(a, b, c)
        sync()

    benchmark.group = f'stream {device}'
    benchmark.extra_info.update(
        nbytes_per_array=a.numel() * 4, dtype='float32', torch_num_threads=torch.get_num_threads()
    )
    benchmark.pedantic(run, rounds=rounds(ROUNDS), warmup_rounds=WARMUP_ROUNDS, iterations=1)
    record_bytes_moved(benchmark, bandwidth.ARRAYS_MOVED[provider] * a.numel() * 4, device)
