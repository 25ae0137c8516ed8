"""Inverse p-th roots (kernels/matrix_root.py, kernels/triton_matrix_root.py).

Accuracy is the relative 2-norm error against the float64 eigh reference
(``matrix_root.relative_error``), on SPD matrices Q diag(lam) Q^T with log-spaced spectra
of condition number kappa. Bounds, from measurements on this suite's matrices (seeded;
p = 4, eps = 1e-12), with >= 4x headroom:
    fp32 eigh:    err ~ 1.3e-7 kappa at n = 1024 (1.2e-5 at 1e2, 8e-2 at 1e6), less for
                  smaller n  -> bound 1e-5 + 5e-7 kappa; meaningless past kappa ~ 1e6
                  (measured 9 at 1e8: fp32 cannot resolve lam = 1e-8 next to 1), where the
                  fp64 option is checked instead: err <= 1e-7 (measured 4e-8, the final
                  rounding of the root to fp32).
    fp32 Newton:  err ~ 4e-9 kappa at n = 128 (1.6e-6 at 1e2, 3.4e-3 at 1e6)
                  -> bound 1e-5 + 2e-8 kappa for kappa <= 1e6.
"""

import math

import pytest
import torch

from kernels import matrix_root as mr

P, EPS = 4, 1e-12


def spd(n, kappa, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    mats = []
    for _ in range(batch or 1):
        U, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
        lam = (
            torch.logspace(0, -math.log10(kappa), n, dtype=torch.float64)
            if n > 1
            else torch.ones(1, dtype=torch.float64)
        )
        mats.append((U * lam) @ U.T)
    out = torch.stack(mats).float()
    return out if batch else out[0]


CASES = [(n, k) for n in (1, 7, 128) for k in (1.0, 1e2, 1e4, 1e6, 1e8)] + [
    (1024, 1e2),
    (1024, 1e8),
]


@pytest.mark.parametrize('n,kappa', CASES)
def test_eigh_root_accuracy(n, kappa):
    A = spd(n, kappa, seed=n)
    if kappa <= 1e6:
        root, Q = mr.eigh_inverse_root(A, P, EPS)
        assert root.dtype == torch.float32 and Q.shape == (n, n)
        assert mr.relative_error(root, A, P, EPS).item() <= 1e-5 + 5e-7 * kappa
    root64, _ = mr.eigh_inverse_root(A, P, EPS, fp64=True)
    assert mr.relative_error(root64, A, P, EPS).item() <= 1e-7


@pytest.mark.parametrize('n,kappa', [(n, k) for n in (1, 7, 128) for k in (1.0, 1e2, 1e4, 1e6)])
def test_newton_reference_accuracy(n, kappa):
    A = spd(n, kappa, seed=n, batch=2)
    X, ok = mr.newton_inverse_root_reference(A, P, EPS)
    assert ok.all()
    assert (mr.relative_error(X, A, P, EPS) <= 1e-5 + 2e-8 * kappa).all()
    torch.testing.assert_close(X, X.mT, rtol=0, atol=0)


@pytest.mark.parametrize('p', [1, 2, 3, 4, 8])
def test_newton_matches_eigh_for_each_root_order(p):
    A = spd(20, 50.0, seed=p, batch=3)
    X, ok = mr.newton_inverse_root_reference(A, p, EPS)
    ref, _ = mr.eigh_inverse_root(A, p, EPS, fp64=True)
    assert ok.all()
    # kappa = 50: both within ~1e-6 relative of the fp64 root (measured 4e-7).
    torch.testing.assert_close(X, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_rank_deficient_input_is_regularised_on_every_path():
    g = torch.Generator().manual_seed(3)
    G = torch.randn(3, 16, 3, generator=g)
    A = G @ G.mT  # rank 3 of 16: eigh returns ~-1e-7 for the zero eigenvalues
    eps = 1e-4
    ref = mr.eigh_inverse_root(A.double(), P, eps)[0]
    for method in ('eigh', 'newton'):
        root, _, _, _ = mr.matrix_inverse_root(A, P, eps, method=method)
        assert torch.isfinite(root).all(), method
        # kappa = ||A|| / eps ~ 1e5 here, so fp32 is good to ~1e-2 of the largest entry.
        assert (mr.relative_error(root, A, P, eps) <= 5e-2).all(), method
    assert torch.isfinite(ref).all()


def test_newton_fallback_to_eigh_when_iteration_fails():
    A = spd(24, 1e6, seed=5, batch=2)
    # Two iterations cannot converge from z I at kappa = 1e6: every block falls back.
    root, Q, stats, _ = mr.matrix_inverse_root(A, P, EPS, method='newton', max_iters=2)
    assert stats.newton == 0 and stats.newton_fallbacks == 2 and stats.eigh == 2
    torch.testing.assert_close(root, mr.eigh_inverse_root(A, P, EPS)[0], rtol=0, atol=0)
    assert Q is None


def test_newton_mixed_batch_falls_back_only_where_needed():
    A = torch.stack([spd(16, 2.0, seed=1), spd(16, 1e7, seed=2)])
    root, _, stats, _ = mr.matrix_inverse_root(A, P, EPS, method='newton', max_iters=8)
    assert stats.newton == 1 and stats.newton_fallbacks == 1
    torch.testing.assert_close(root[1], mr.eigh_inverse_root(A[1], P, EPS)[0], rtol=0, atol=0)


def test_nonfinite_input_never_counts_as_converged():
    A = spd(8, 10.0)[None].clone()
    A[0, 0, 1] = A[0, 1, 0] = float('nan')
    _, ok = mr.newton_inverse_root_reference(A, P, EPS, max_iters=5)
    assert not ok.any()


def _perturbed(n, kappa, size, seed=0):
    A0 = spd(n, kappa, seed=seed).double()
    g = torch.Generator().manual_seed(seed + 1)
    G = torch.randn(n, 4, dtype=torch.float64, generator=g)
    return A0.float(), (A0 + size * (G @ G.T) / 4).float()


@pytest.mark.parametrize('kappa', [10.0, 100.0])
def test_warm_root_accepted_for_small_moves_is_as_accurate_as_certified(kappa):
    A0, A1 = _perturbed(96, kappa, 1e-7)
    _, Q0 = mr.eigh_inverse_root(A0, P, EPS)
    rtol = 1e-4
    root, ok = mr.warm_inverse_root(A1[None], P, EPS, Q0[None], rtol=rtol)
    assert ok.all()
    # The certified bound plus fp32 rounding of the four products (~n u = 6e-6).
    assert mr.relative_error(root[0], A1, P, EPS).item() <= rtol + 1e-5


def test_warm_root_rejects_large_moves_and_falls_back_to_eigh():
    A0, A1 = _perturbed(64, 100.0, 1e-2)
    _, Q0 = mr.eigh_inverse_root(A0, P, EPS)
    _, ok = mr.warm_inverse_root(A1[None], P, EPS, Q0[None], rtol=1e-4)
    assert not ok.any()
    root, Q, stats, rejected = mr.matrix_inverse_root(
        A1[None], P, EPS, method='warm', eigvecs=Q0[None]
    )
    assert stats.warm_rejections == 1 and stats.eigh == 1 and rejected.all()
    ref, Qref = mr.eigh_inverse_root(A1[None], P, EPS)
    torch.testing.assert_close(root, ref, rtol=0, atol=0)
    torch.testing.assert_close(Q, Qref, rtol=0, atol=0)


def test_warm_bound_holds_across_move_sizes():
    # Wherever the warm path accepts, its error is within the certified rtol.
    for size in (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3):
        A0, A1 = _perturbed(48, 30.0, size, seed=7)
        _, Q0 = mr.eigh_inverse_root(A0, P, EPS)
        root, ok = mr.warm_inverse_root(A1[None], P, EPS, Q0[None], rtol=1e-3)
        if ok.all():
            assert mr.relative_error(root[0], A1, P, EPS).item() <= 1e-3 + 1e-5, size


def test_auto_method_per_device_and_root_order():
    A = spd(12, 10.0, batch=2)
    _, Q, stats, _ = mr.matrix_inverse_root(A, P, EPS)  # CPU without eigenvectors: eigh
    assert stats.eigh == 2 and Q is not None
    _, _, stats, _ = mr.matrix_inverse_root(A, P, EPS, eigvecs=Q)  # CPU never guesses warm
    assert stats.eigh == 2 and stats.warm + stats.warm_rejections == 0
    _, _, stats, _ = mr.matrix_inverse_root(A, P, EPS, method='warm', eigvecs=Q)
    assert stats.warm + stats.warm_rejections == 2
    _, _, stats, _ = mr.matrix_inverse_root(A, 2.5, EPS, method='newton')  # non-integer p
    assert stats.eigh == 2


def test_bad_input_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match='square'):
        mr.eigh_inverse_root(torch.zeros(3, 4), P, EPS)
    with pytest.raises(ValueError, match='method'):
        mr.matrix_inverse_root(torch.eye(3), P, EPS, method='svd')
    with pytest.raises(ValueError, match='integer'):
        mr.newton_inverse_root_reference(torch.eye(3), 2.5, EPS)


def test_two_dimensional_input_keeps_its_shape():
    A = spd(9, 5.0)
    root, Q, _, rejected = mr.matrix_inverse_root(A, P, EPS)
    assert root.shape == (9, 9) and Q.shape == (9, 9) and rejected.shape == ()


def test_failed_eigh_is_retried_in_fp64_then_reported_as_nan(monkeypatch):
    A = spd(6, 10.0, batch=2)
    real = torch.linalg.eigh
    calls = []

    def flaky(x):
        calls.append(x.dtype)
        if x.dtype == torch.float32:
            raise torch.linalg.LinAlgError('simulated syevd failure')
        return real(x)

    monkeypatch.setattr(torch.linalg, 'eigh', flaky)
    root, _ = mr.eigh_inverse_root(A, P, EPS)
    monkeypatch.setattr(torch.linalg, 'eigh', real)
    # fp64 eigenpairs rounded to fp32 before the root is formed: kappa = 10, ~1e-7 (measured 2e-7).
    assert (mr.relative_error(root, A, P, EPS) <= 1e-6).all()
    assert torch.float64 in calls

    def broken(x):
        raise torch.linalg.LinAlgError('simulated failure')

    monkeypatch.setattr(torch.linalg, 'eigh', broken)
    root, _ = mr.eigh_inverse_root(A, P, EPS)
    assert torch.isnan(root).all()
