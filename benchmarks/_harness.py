"""Shared benchmark helpers: environment record, bandwidth denominator, quick mode.

``environment_info()`` is merged into pytest-benchmark's ``machine_info`` by
benchmarks/conftest.py, so each saved JSON says which machine, software versions, commit
and extension state produced it; conftest also adds ``memory_bandwidth``, a STREAM probe
(``algoperf.bandwidth``) of every device the file's benchmarks declared with
``extra_info['device']`` (default 'cpu'), measured once per session. Read-only: git is
queried with plumbing commands that never touch the index.

Conventions the report generator (``algoperf bench``, ``algoperf/bench.py``) reads from a
benchmark's ``extra_info``: ``device``; ``bytes_moved`` (adds GB/s and % of streaming
bandwidth columns; see ``record_bytes_moved``); ``peer`` (the provider, within the same
group, that a "vs peer" column divides by); ``items`` and ``item_unit`` (a per-item
column, e.g. per step); ``report`` (a dict of further columns, shown as given).
"""

import importlib.metadata
import os
import platform
import subprocess

import torch

import kernels
from algoperf import bandwidth
from algoperf.bench import QUICK_ENV

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_INSTALLED = 'not installed'
# `algoperf bench --quick` sets QUICK_ENV; suites then shrink their rounds via `rounds()`.
QUICK_ROUNDS = 2
QUICK_PROBE_REPEATS = 3


def quick() -> bool:
    """Whether this is a smoke run (``algoperf bench --quick``): numbers are not comparable."""
    return os.environ.get(QUICK_ENV, '') not in ('', '0')


def rounds(n: int) -> int:
    """``n`` timed rounds, or ``QUICK_ROUNDS`` in quick mode."""
    return min(n, QUICK_ROUNDS) if quick() else n


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(
            ['git', *args], cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError, AttributeError):
        return None


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _dali_version() -> str:
    # DALI ships per CUDA major (nvidia-dali-cuda120, -cuda130); plain `nvidia-dali` is a
    # placeholder package. Report whichever real one is installed, with its name.
    found = sorted(
        f'{dist.metadata["Name"]} {dist.version}'
        for dist in importlib.metadata.distributions()
        if (dist.metadata['Name'] or '').lower().startswith('nvidia-dali-cuda')
    )
    return ', '.join(found) if found else NOT_INSTALLED


def _parallel_backend() -> str | None:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith('ATen parallel backend:'):
            return line.split(':', 1)[1].strip()
    return None


def environment_info() -> dict[str, object]:
    """Describes the machine, software and commit a benchmark ran on.

    Returns:
        A JSON-serialisable dict: CPU model, core count and usable cores, physical memory,
        torch version, intra-op threads and parallel backend; GPU names, count, CUDA
        runtime and driver when CUDA is available; triton, nvidia-dali, numpy and pandas
        versions ('not installed' when absent); git SHA (None outside a checkout or before
        the first commit) and whether the working tree differs from it; whether
        ``kernels._C`` is built; and whether this is a quick (smoke) run.
    """
    info: dict[str, object] = {
        'cpu_model': _cpu_model(),
        'cpu_count': os.cpu_count(),
        'cpu_affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
        'memory_bytes': _memory_bytes(),
        'torch_version': torch.__version__,
        'torch_num_threads': torch.get_num_threads(),
        'torch_parallel_backend': _parallel_backend(),
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),
        'triton_version': _package_version('triton'),
        'dali_version': _dali_version(),
        'numpy_version': _package_version('numpy'),
        'pandas_version': _package_version('pandas'),
        'git_sha': _git('rev-parse', 'HEAD'),
        # diff-index is plumbing: unlike `git status`/`git diff` it never refreshes the
        # index, at the price of reporting touched-but-unchanged files as dirty.
        'git_dirty': _git('diff-index', '--quiet', 'HEAD', '--') is None,
        'kernels_ext_built': kernels.ext_available(),
        'cuda_available': torch.cuda.is_available(),
        'quick': quick(),
    }
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info.update(
            gpu_name=names[0],
            gpu_names=names,
            gpu_count=len(names),
            cuda_runtime=torch.version.cuda,
            cuda_driver=_nvidia_driver_version(),
        )
    return info


def _nvidia_driver_version() -> str | None:
    try:
        result = subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.splitlines()[0].strip() if result.returncode == 0 else None


def _device_key(device: torch.device | str) -> str:
    dev = torch.device(device)
    if dev.type == 'cuda' and dev.index is None:
        dev = torch.device('cuda', torch.cuda.current_device())
    return str(dev)


_BANDWIDTH: dict[str, dict] = {}


def memory_bandwidth(device: torch.device | str = 'cpu') -> dict:
    """``algoperf.bandwidth.probe(device)``, measured once per process (session) and cached.

    Args:
        device: 'cpu', 'cuda' or 'cuda:<i>'. Default 'cpu'.

    Returns:
        The probe's dict (copy and triad GB/s, array size, threads).
    """
    key = _device_key(device)
    if key not in _BANDWIDTH:
        _BANDWIDTH[key] = bandwidth.probe(key, repeats=QUICK_PROBE_REPEATS if quick() else None)
    return _BANDWIDTH[key]


def streaming_gbps(device: torch.device | str = 'cpu') -> float:
    """The device's attainable streaming bandwidth in GB/s: best of probed copy and triad."""
    return bandwidth.streaming_gbps(memory_bandwidth(device))


def pct_of_streaming_bandwidth(
    bytes_moved: float, seconds: float, device: torch.device | str = 'cpu'
) -> float:
    """How close a memory-bound kernel comes to the device's streaming bandwidth.

    Args:
        bytes_moved: minimum bytes the kernel must read plus write (count each tensor
            once, as STREAM does; a reduction over N fp32 elements moves 4N bytes).
        seconds: the kernel's time (a median, for a stable figure).
        device: where it ran; its probe (cached per session) is the denominator.

    Returns:
        100 * (bytes_moved / seconds) / ``streaming_gbps(device)``.
    """
    return 100.0 * bytes_moved / seconds / 1e9 / streaming_gbps(device)


def record_bytes_moved(benchmark, bytes_moved: float, device: torch.device | str = 'cpu') -> None:
    """Annotates a finished pytest-benchmark run with bytes moved, GB/s and % of bandwidth.

    Call after ``benchmark(...)``/``benchmark.pedantic(...)``. Always records ``device`` and
    ``bytes_moved`` (the report recomputes GB/s from them); adds ``gbps`` and
    ``pct_stream_bw`` from the median when timing ran (not under --benchmark-disable).
    """
    key = _device_key(device)
    benchmark.extra_info.update(device=key, bytes_moved=bytes_moved)
    stats = getattr(benchmark, 'stats', None)
    if stats is None or not getattr(stats, 'stats', None) or not stats.stats.data:
        return
    median = stats.stats.median
    benchmark.extra_info.update(
        gbps=bytes_moved / median / 1e9,
        pct_stream_bw=pct_of_streaming_bandwidth(bytes_moved, median, key),
    )
