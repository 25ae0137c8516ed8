"""Shampoo's inverse roots: kernels.matrix_root's paths vs eigh-based roots, with accuracy.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/kernels/bench_matrix_root.py \
        --benchmark-json=benchmarks/results/matrix_root_<hw>_<yyyymmdd>.json

Input: a batch of SPD n x n fp32 blocks (n = 128, 512, 1024; 4, 4 and 2 blocks) with
log-spaced spectra of condition number 1e3 (Q diag(lam) Q^T, Q random orthogonal); p = 4
(Shampoo's A^(-1/4)), eps = 1e-12. Every provider records ``rel err vs fp64`` (the max over
blocks of ||X - X64||_2 / ||X64||_2), so times are compared at the accuracy each reaches.

Providers per block size (one group each):
    eigh (peer): ``eigh_inverse_root``, Distributed Shampoo's default EigenConfig path
        (fp32 eigh, clamp, Q diag Q^T).
    eigh_fp64: the same in float64 (its retry path).
    newton: the coupled Newton iteration from a cold start (torch matmuls on CPU; the
        Triton kernels on CUDA), tol 1e-6.
    warm_accepted: ``warm_inverse_root`` from the eigenvectors of the previous factor when
        the factor moved by 1e-9 (certified: four matmuls, no eigh).
    warm_rejected: ``matrix_inverse_root(method='warm')`` when the factor moved by 1e-2:
        one matmul to reject, then eigh (what a real Shampoo run sees: see
        kernels/matrix_root.py).
On CUDA (none in these sessions) the same groups run on the GPU, ``device`` recorded.
"""

import math

import pytest
import torch
from _harness import rounds

from kernels import matrix_root as mr

SIZES = {128: 4, 512: 4, 1024: 2}
ROUNDS = {128: 20, 512: 5, 1024: 3}
P, EPS, KAPPA = 4, 1e-12, 1e3
PROVIDERS = ('eigh', 'eigh_fp64', 'newton', 'warm_accepted', 'warm_rejected')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def _blocks(n: int, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
        lam = torch.logspace(0, -math.log10(KAPPA), n, dtype=torch.float64)
        out.append((U * lam) @ U.T)
    return torch.stack(out)


def _moved(A64: torch.Tensor, size: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    G = torch.randn(*A64.shape[:-1], 8, dtype=torch.float64, generator=g)
    return A64 + size * (G @ G.mT) / 8


def _case(provider: str, n: int, batch: int):
    A64 = _blocks(n, batch)
    A0 = A64.float().to(DEVICE)
    if provider == 'eigh':
        return A0, lambda: mr.eigh_inverse_root(A0, P, EPS)[0]
    if provider == 'eigh_fp64':
        return A0, lambda: mr.eigh_inverse_root(A0, P, EPS, fp64=True)[0]
    if provider == 'newton':
        return A0, lambda: mr.newton_inverse_root(A0, P, EPS, tol=1e-6)[0]
    _, Q0 = mr.eigh_inverse_root(A0, P, EPS)
    if provider == 'warm_accepted':
        A1 = _moved(A64, 1e-9).float().to(DEVICE)

        def warm():
            root, ok = mr.warm_inverse_root(A1, P, EPS, Q0, rtol=1e-4)
            assert ok.all(), 'the benchmark input must be certifiable'
            return root

        return A1, warm
    A1 = _moved(A64, 1e-2).float().to(DEVICE)
    return A1, lambda: mr.matrix_inverse_root(A1, P, EPS, method='warm', eigvecs=Q0).root


@pytest.mark.parametrize('provider', PROVIDERS)
@pytest.mark.parametrize('n', list(SIZES))
def test_matrix_root(benchmark, n, provider):
    batch = SIZES[n]
    A, fn = _case(provider, n, batch)
    sync = torch.cuda.synchronize if DEVICE == 'cuda' else (lambda: None)

    def run():
        out = fn()
        sync()
        return out

    benchmark.group = f'root_n{n}'
    benchmark.extra_info.update(
        device=DEVICE, peer='eigh', items=batch, item_unit='block', n=n, p=P, kappa=KAPPA
    )
    root = benchmark.pedantic(run, rounds=rounds(ROUNDS[n]), warmup_rounds=1, iterations=1)
    err = mr.relative_error(root.cpu(), A.cpu(), P, EPS).max().item()
    benchmark.extra_info['report'] = {'rel err vs fp64': f'{err:.1e}'}
