"""Shared benchmark helpers: the environment record attached to every result file.

``environment_info()`` is merged into pytest-benchmark's ``machine_info`` by
benchmarks/conftest.py, so each saved JSON says which machine, torch build, commit and
extension state produced it. Read-only: git is queried with plumbing commands that never
touch the index.
"""

import importlib.metadata
import os
import platform
import subprocess

import torch

import kernels

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _parallel_backend() -> str | None:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith('ATen parallel backend:'):
            return line.split(':', 1)[1].strip()
    return None


def environment_info() -> dict[str, object]:
    """Describes the machine, software and commit a benchmark ran on.

    Returns:
        A JSON-serialisable dict: CPU model and core counts, torch version and intra-op
        threads, CUDA device, runtime and driver when CUDA is available, triton version,
        git SHA (None outside a checkout or before the first commit) and whether the
        working tree differs from it, and whether ``kernels._C`` is built.
    """
    info: dict[str, object] = {
        'cpu_model': _cpu_model(),
        'cpu_count': os.cpu_count(),
        'cpu_affinity': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None,
        'torch_version': torch.__version__,
        'torch_num_threads': torch.get_num_threads(),
        'torch_parallel_backend': _parallel_backend(),
        'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),
        'triton_version': _package_version('triton'),
        'git_sha': _git('rev-parse', 'HEAD'),
        # diff-index is plumbing: unlike `git status`/`git diff` it never refreshes the
        # index, at the price of reporting touched-but-unchanged files as dirty.
        'git_dirty': _git('diff-index', '--quiet', 'HEAD', '--') is None,
        'kernels_ext_built': kernels.ext_available(),
        'cuda_available': torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
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
