"""STREAM-style memory-bandwidth probe: the denominator for memory-bound kernels.

A fused optimizer step or a gradient-norm reduction is judged by the fraction of the
machine's streaming bandwidth it reaches (bytes moved / time / probe GB/s), so the probe
measures what plain torch ops attain on the same device, with the same threads:

* copy  ``b = a``           counted as 2 x nbytes moved (read a, write b);
* triad ``a = b + s * c``   counted as 3 x nbytes moved (read b and c, write a).

Counting is McCalpin's STREAM convention: the extra read a write-allocate cache incurs for
the destination is not counted, so a CPU copy that pays it reads ~2/3 of the traffic the
memory bus carries. On this project's 2-vCPU AMD EPYC VM (torch 2.13 CPU, 2 threads) the
quiet-machine figures are ~33 GB/s copy and ~51 GB/s for the in-place add
``y = x + 0.5 * y`` (``../shared/reference/perf_anchors.md``); the in-place add has no
write-allocate, so triad into a third array reads lower than it.

Scope and fallbacks: CPU and CUDA, float32 arrays, torch only. On CPU the ops run on all
of torch's intra-op threads (``torch.get_num_threads()``; set it before calling to probe
fewer). On CUDA each timed op is bracketed by CUDA events after a synchronize. Nothing
runs at import time; a probe allocates 3 arrays of ``nbytes`` (768 MiB on CPU, 3 GiB on
GPU by default) and frees them before returning.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable

import torch

# Per-array sizes. STREAM's rule is >= 4x the sum of the last-level caches. CPU: AMD EPYC
# L3 is 32 MiB per CCD (96 MiB on X parts) and a small VM sits on one or two CCDs, so
# 256 MiB is >= 2.7x even a 96 MiB X-part CCD and 8x a standard one, and one copy still
# takes only ~16 ms at ~33 GB/s. GPU: L2 is 40-60 MiB on A100/H100/H200 (126 MiB on
# B200); 1 GiB is 8x the largest, and keeps one H100 copy (2 GiB at ~3 TB/s, ~0.7 ms)
# long enough that the ~5 us launch and event overhead stays under 1%.
CPU_NBYTES = 256 * 2**20
CUDA_NBYTES = 2**30
# Best-of-N. 10 timed passes of each kernel cost ~0.5 s on the 2-vCPU VM; on GPU 20 passes
# cost ~40 ms, so spend more to beat clock-boost noise.
CPU_REPEATS = 10
CUDA_REPEATS = 20
WARMUP = 2  # The first pass also pays page faults (CPU) or lazy allocator growth (CUDA).

# STREAM counting: arrays touched per element, read or written.
ARRAYS_MOVED = {'copy': 2, 'triad': 3}
TRIAD_SCALAR = 3.0  # STREAM's scalar.


def stream_copy(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    """STREAM copy: ``b = a`` (c is unused; same signature as ``stream_triad``)."""
    del c
    b.copy_(a)


def stream_triad(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    """STREAM triad: ``a = b + s * c`` in one fused kernel (``torch.add`` with alpha)."""
    torch.add(b, c, alpha=TRIAD_SCALAR, out=a)


KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]] = {
    'copy': stream_copy,
    'triad': stream_triad,
}


def allocate(
    device: torch.device | str, nbytes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three float32 STREAM arrays, each ``nbytes`` (rounded down to 4 bytes), filled.

    Filling with torch ops first-touches every page from the intra-op threads that will
    later stream them, so pages land on the threads' NUMA nodes and no page fault is timed.

    Args:
        device: where to allocate.
        nbytes: bytes per array.

    Returns:
        (a, b, c) filled with 1, 2 and 0, as STREAM initialises them.
    """
    n = nbytes // 4
    if n < 1:
        raise ValueError(f'nbytes must be >= 4, got {nbytes}')
    arrays = tuple(torch.empty(n, dtype=torch.float32, device=device) for _ in range(3))
    for array, value in zip(arrays, (1.0, 2.0, 0.0)):
        array.fill_(value)
    return arrays  # type: ignore[return-value]


def _time_cpu(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _time_cuda(fn: Callable[[], None]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def probe(
    device: torch.device | str = 'cpu', nbytes: int | None = None, repeats: int | None = None
) -> dict:
    """Measures streaming copy and triad bandwidth on ``device``.

    Args:
        device: 'cpu', 'cuda' or a CUDA device such as 'cuda:1'. Default 'cpu'.
        nbytes: bytes per array; default 256 MiB on CPU, 1 GiB on CUDA (module comment).
        repeats: timed passes per kernel after ``WARMUP`` untimed ones; the best pass is
            the figure. Default 10 on CPU, 20 on CUDA.

    Returns:
        A JSON-serialisable dict: ``device``, ``device_name`` (the GPU's name, None on
        CPU), ``threads`` (intra-op threads on CPU), ``dtype``, ``nbytes_per_array``,
        ``repeats``, and per kernel ``<kernel>_gbps`` (best pass) and
        ``<kernel>_median_gbps``, in 1e9 bytes per second with STREAM byte counting.
    """
    dev = torch.device(device)
    cuda = dev.type == 'cuda'
    if cuda and dev.index is None:
        dev = torch.device('cuda', torch.cuda.current_device())
    if dev.type not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'cpu' or CUDA, got {device!r}")
    nbytes = nbytes if nbytes is not None else (CUDA_NBYTES if cuda else CPU_NBYTES)
    repeats = repeats if repeats is not None else (CUDA_REPEATS if cuda else CPU_REPEATS)
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    result: dict = {
        'device': str(dev),
        'device_name': torch.cuda.get_device_name(dev) if cuda else None,
        'threads': None if cuda else torch.get_num_threads(),
        'dtype': 'float32',
        'nbytes_per_array': (nbytes // 4) * 4,
        'repeats': repeats,
    }
    timer = _time_cuda if cuda else _time_cpu
    with torch.cuda.device(dev) if cuda else contextlib.nullcontext():
        arrays = allocate(dev, nbytes)
        try:
            for name, kernel in KERNELS.items():
                run = functools.partial(kernel, *arrays)
                for _ in range(WARMUP):
                    timer(run)
                times = [timer(run) for _ in range(repeats)]
                moved = ARRAYS_MOVED[name] * result['nbytes_per_array']
                result[f'{name}_gbps'] = moved / min(times) / 1e9
                result[f'{name}_median_gbps'] = moved / statistics.median(times) / 1e9
        finally:
            del arrays
            if cuda:
                # The 3 GiB would otherwise stay in the caching allocator for whatever
                # runs next in this process (the probe runs at the end of a benchmark).
                torch.cuda.empty_cache()
    return result


def streaming_gbps(result: dict) -> float:
    """The attainable streaming bandwidth of a ``probe`` result: the best of its kernels.

    The higher figure is the conservative denominator: a kernel's "% of streaming
    bandwidth" is then never flattered by the slower of copy and triad.
    """
    return max(result[f'{name}_gbps'] for name in KERNELS)
