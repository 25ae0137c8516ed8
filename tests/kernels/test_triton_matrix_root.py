"""The Triton coupled-Newton kernels (kernels/triton_matrix_root.py) against their spec.

CPU: in Triton's interpreter (``TRITON_INTERPRET=1`` per test), on small odd sizes (the
interpreter runs each 32 x 32 tile program in numpy, ~0.1 s per launch at n = 40).
GPU (``gpu`` marker): compiled, at Shampoo's real block sizes.

Tolerances: ``bmm`` sums the same fp32 products as torch's matmul in another order (32-wide
k tiles vs MKL's blocking): |error| <= n u sum|a||b| ~ 40 * 6e-8 * 40 ~ 1e-4 worst case at
n = 40 with O(1) entries; measured <= 2e-6, bound used 1e-5 absolute on O(1..10) outputs.
The Newton iteration amplifies nothing (it converges to the same fixed point from either
rounding), so X matches the reference to its own convergence tolerance: 1e-5 relative.
"""

import math

import pytest
import torch

pytest.importorskip('triton')

from kernels import matrix_root as mr
from kernels import triton_matrix_root as tmr


@pytest.fixture
def interpreter(monkeypatch):
    monkeypatch.setenv('TRITON_INTERPRET', '1')


def spd(n, kappa, batch, seed=0, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
        lam = (
            torch.logspace(0, -math.log10(kappa), n, dtype=torch.float64)
            if n > 1
            else torch.ones(1, dtype=torch.float64)
        )
        out.append((U * lam) @ U.T)
    return torch.stack(out).float().to(device)


@pytest.mark.parametrize('n', [1, 7, 33, 40])
def test_bmm_with_fused_transforms_and_residual(interpreter, n):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(3, n, n, generator=g)
    b = torch.randn(3, n, n, generator=g)
    eye = torch.eye(n)
    atol = 1e-5 * max(1.0, n / 10)
    torch.testing.assert_close(tmr.bmm(a, b), a @ b, rtol=1e-5, atol=atol)
    torch.testing.assert_close(
        tmr.bmm(a, b, op_a=(1.25, -0.25)), (1.25 * eye - 0.25 * a) @ b, rtol=1e-5, atol=atol
    )
    torch.testing.assert_close(
        tmr.bmm(a, b, op_b=(1.25, -0.25)), a @ (1.25 * eye - 0.25 * b), rtol=1e-5, atol=atol
    )
    t = 1.25 * eye - 0.25 * a
    torch.testing.assert_close(
        tmr.bmm(a, a, op_a=(1.25, -0.25), op_b=(1.25, -0.25)), t @ t, rtol=1e-5, atol=atol
    )
    res = torch.zeros(3)
    c = tmr.bmm(a, b, residual=res)
    torch.testing.assert_close(res, (c - eye).abs().amax(dim=(1, 2)), rtol=0, atol=0)


def test_bmm_rejects_bad_input(interpreter):
    with pytest.raises(ValueError, match='fp32'):
        tmr.bmm(
            torch.zeros(1, 4, 4, dtype=torch.float64), torch.zeros(1, 4, 4, dtype=torch.float64)
        )
    with pytest.raises(ValueError, match='stacks'):
        tmr.bmm(torch.zeros(1, 4, 4), torch.zeros(2, 4, 4))


@pytest.mark.parametrize('n,p', [(20, 4), (33, 2), (7, 3), (1, 4)])
def test_coupled_newton_matches_reference(interpreter, n, p):
    A = spd(n, 20.0, batch=2, seed=n)
    X0, M0, _ = mr._newton_init(A, p, 1e-12)
    X, ok = tmr.coupled_newton(X0, M0, p, tol=1e-5)
    ref, ok_ref = mr.newton_inverse_root_reference(A, p, 1e-12, tol=1e-5)
    assert ok.all() and ok_ref.all()
    torch.testing.assert_close(X, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert (mr.relative_error(X, A, p, 1e-12) <= 2e-5).all()


def test_coupled_newton_reports_nonconvergence(interpreter):
    A = spd(16, 1e6, batch=1)
    X0, M0, _ = mr._newton_init(A, 4, 1e-12)
    _, ok = tmr.coupled_newton(X0, M0, 4, max_iters=2)
    assert not ok.any()


@pytest.mark.gpu
@pytest.mark.parametrize('n', [128, 512, 1024])
def test_gpu_newton_roots_are_accurate_and_used_by_auto(n):
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    A = spd(n, 1e3, batch=4, seed=n, device='cuda')
    root, _, stats, _ = mr.matrix_inverse_root(A, 4, 1e-12)
    assert stats.newton + stats.newton_fallbacks == 4
    assert (mr.relative_error(root.cpu(), A.cpu(), 4, 1e-12) <= 1e-3).all()
