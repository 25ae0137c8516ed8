"""Inverse p-th roots ``(A + eps I)^(-1/p)`` of batches of symmetric PSD matrices.

Shampoo's cost beyond AdamW is these roots of its Kronecker factors, recomputed every
``precondition_frequency`` steps. Three ways to compute them, on stacked same-size blocks
``A`` of shape ``(..., n, n)``:

    * ``eigh_inverse_root`` (the reference, and every path's fallback):
      ``A + eps I = Q diag(lam) Q^T``, root ``= Q diag(lam^(-1/p)) Q^T`` with ``lam``
      clamped at ``eps`` (A is PSD; a smaller eigenvalue is rounding, and on a
      rank-deficient factor it is often negative). ``fp64=True`` does it in float64.
    * ``newton_inverse_root``: the coupled Newton iteration (Guo & Higham 2006; the form
      of Distributed Shampoo's CoupledNewtonConfig): ``z = (p+1) / (2 ||A||_F)``,
      ``X0 = z^(1/p) I``, ``M0 = z A``; per iteration ``T = ((p+1) I - M) / p``,
      ``X <- X T``, ``M <- T^p M``; converged when ``max|M - I| <= tol``. Only matrix
      products, so it is the fast path on a GPU (``kernels.triton_matrix_root``: batched
      Triton matmuls with the ``T`` transform fused into the operand loads and the
      convergence test fused into the last product). Integer ``p`` only.
    * ``warm_inverse_root``: reuses the eigenvectors ``Q`` of the previous root. With
      ``B = Q^T (A + eps I) Q = D + E`` (``D`` its diagonal), the first-order
      (Daleckii-Krein) expansion of ``f(x) = x^(-1/p)`` gives
      ``f(B) ~ f(D) + F1 * E``, ``F1_ij = (f(d_i) - f(d_j)) / (d_i - d_j)``, four matrix
      products in all. The neglected term is bounded by ``||E||^2 max|f''| / 2`` on
      ``[d_min - ||E||, inf)``; blocks whose bound exceeds ``rtol`` (relative, 2-norm)
      are recomputed by ``eigh``, which refreshes ``Q``. A first check needs one product
      (``||E||_F^2 = ||A Q||_F^2 - sum_i B_ii^2`` as Q is orthogonal), so a rejected
      block costs one extra matmul, about 18% of an eigh at n = 1024.

Cost and choice (``matrix_inverse_root``, ``method='auto'``): on CPU, LAPACK's eigh of an
fp32 1024-block is ~80 ms, ~5.4 times a 1024 matmul (measured on the 2-core dev machine),
so a cold Newton (15-30 iterations of 4 products) cannot win there, and CPU takes eigh.
On CUDA the ranking flips (batched products run near peak, cuSOLVER's eigh does not):
CUDA takes Newton, with eigh for the blocks that do not converge.

The warm path is exact only when a factor moved little relative to its *smallest*
eigenvalue (about 1e-5 of the spectrum's scale at condition number 10, measured in
tests/kernels/test_matrix_root.py); real Shampoo factors move far more between updates:
on a digits MLP (64-256-256-10, 1000 steps) it certified 0 of 198 blocks with roots every
10 steps and 0 of 18 every 100, for beta2 = 0.999 and for AdaGrad sums alike. So 'auto'
does not try it; ``method='warm'`` is for factors known to barely move (frozen or
converged layers), and when it rejects, it costs one extra matmul before the eigh.
``RootStats`` counts which path produced each block.

Accuracy: ``relative_error`` measures ``||X - X64||_2 / ||X64||_2`` against the float64
reference. fp32 eigh itself is only good to about ``u * cond / p`` (u = 6e-8): 1e-5 at
condition number 1e2, 1e-3 at 1e4, order 1 at 1e8.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch

__all__ = [
    'RootResult',
    'RootStats',
    'eigh_inverse_root',
    'matrix_inverse_root',
    'newton_inverse_root',
    'newton_inverse_root_reference',
    'relative_error',
    'warm_inverse_root',
]

_METHODS = ('auto', 'eigh', 'newton', 'warm')


@dataclasses.dataclass
class RootStats:
    """How many blocks each path produced (accumulates over calls)."""

    eigh: int = 0
    newton: int = 0
    warm: int = 0
    newton_fallbacks: int = 0
    warm_rejections: int = 0

    def add(self, other: RootStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class RootResult(NamedTuple):
    """What ``matrix_inverse_root`` returns.

    Attributes:
        root: the roots, shaped like the input.
        eigvecs: eigenvectors for the next warm call when every block has current ones
            (eigh or accepted warm blocks), else None.
        stats: how many blocks each path produced.
        warm_rejected: per block, whether the warm path was tried and rejected.
    """

    root: torch.Tensor
    eigvecs: torch.Tensor | None
    stats: RootStats
    warm_rejected: torch.Tensor


def _eye_like(A: torch.Tensor) -> torch.Tensor:
    return torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)


def _check_square(A: torch.Tensor) -> None:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f'expected a batch of square matrices (..., n, n), got shape {tuple(A.shape)}'
        )


def eigh_inverse_root(
    A: torch.Tensor, p: float, epsilon: float, *, fp64: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference ``(A + eps I)^(-1/p)`` by symmetric eigendecomposition.

    Args:
        A: symmetric PSD matrices, shape (..., n, n), fp32 or fp64.
        p: root order (any positive float: Shampoo's 1/(2k) exponents times a multiplier).
        epsilon: added to the diagonal; also the floor the eigenvalues are clamped to.
        fp64: decompose in float64 (slower: 1.8x at n = 1024 on CPU).

    Returns:
        (root in A's dtype, eigenvectors in A's dtype), the latter for ``warm_inverse_root``.
    """
    _check_square(A)
    work = A.double() if fp64 else A
    reg = work + epsilon * _eye_like(work)
    try:
        lam, Q = torch.linalg.eigh(reg)
    except torch.linalg.LinAlgError:
        lam, Q = _protected_eigh(reg)
    lam = lam.clamp_min(epsilon)
    root = (Q * lam.pow(-1.0 / p).unsqueeze(-2)) @ Q.mT
    return root.to(A.dtype), Q.to(A.dtype)


def _protected_eigh(reg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block: LAPACK/cuSOLVER eigh, retried in float64; NaN where that fails too.

    Measured: syevd fails ("ill-conditioned or too many repeated eigenvalues") on AdaGrad
    factors (beta2 = 1) of a small MLP after ~600 steps. Distributed Shampoo retries in
    float64 likewise (use_protected_eigh); a NaN result makes the optimizer keep the
    previous root instead of stopping the run.
    """
    flat = reg.reshape(-1, *reg.shape[-2:])
    lams, vecs = [], []
    for block in flat:
        try:
            lam, Q = torch.linalg.eigh(block)
        except torch.linalg.LinAlgError:
            try:
                lam, Q = torch.linalg.eigh(block.double())
            except torch.linalg.LinAlgError:
                lam = torch.full(
                    block.shape[:1], float('nan'), dtype=torch.float64, device=block.device
                )
                Q = torch.full_like(block, float('nan'), dtype=torch.float64)
        lams.append(lam.to(block.dtype))
        vecs.append(Q.to(block.dtype))
    return torch.stack(lams).reshape(reg.shape[:-1]), torch.stack(vecs).reshape(reg.shape)


def newton_inverse_root_reference(
    A: torch.Tensor, p: int, epsilon: float, *, max_iters: int = 100, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled Newton iteration in plain PyTorch (the spec of the Triton kernels).

    Every block runs the same number of iterations: until all have converged or
    ``max_iters``; a converged block stays converged (``M`` stays at I up to rounding).

    Returns:
        (X, converged): X symmetrised, ``converged[b]`` true if block b reached
        ``max|M - I| <= tol`` with finite values.
    """
    _check_square(A)
    X, M, coeff = _newton_init(A, p, epsilon)
    eye = _eye_like(A)
    err = torch.full(A.shape[:-2], math.inf, dtype=A.dtype, device=A.device)
    for _ in range(max_iters):
        T = coeff * eye - M / p
        X = X @ T
        M = torch.linalg.matrix_power(T, p) @ M
        err = (M - eye).abs().amax(dim=(-2, -1))
        if bool((err <= tol).all()):
            break
    converged = (err <= tol) & torch.isfinite(X).all(dim=-1).all(dim=-1)
    return (X + X.mT) / 2, converged


def _newton_init(A: torch.Tensor, p: int, epsilon: float):
    if int(p) != p or p < 1:
        raise ValueError(f'the coupled Newton iteration needs an integer root order >= 1, got {p}')
    Areg = A + epsilon * _eye_like(A)
    z = (p + 1) / (2 * torch.linalg.matrix_norm(Areg).clamp_min(torch.finfo(A.dtype).tiny))
    X = z.pow(1.0 / p)[..., None, None] * _eye_like(A).expand_as(A)
    M = z[..., None, None] * Areg
    return X, M, (p + 1) / p


def newton_inverse_root(
    A: torch.Tensor, p: int, epsilon: float, *, max_iters: int = 100, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled Newton: Triton kernels for CUDA fp32 input, the reference otherwise."""
    if A.is_cuda and A.dtype == torch.float32:
        from kernels import triton_matrix_root

        if triton_matrix_root.available():
            X, M, _ = _newton_init(A, p, epsilon)
            return triton_matrix_root.coupled_newton(X, M, p, max_iters=max_iters, tol=tol)
    return newton_inverse_root_reference(A, p, epsilon, max_iters=max_iters, tol=tol)


def warm_inverse_root(
    A: torch.Tensor, p: float, epsilon: float, eigvecs: torch.Tensor, *, rtol: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order correction of the root in a previous eigenbasis (see module docstring).

    Args:
        A: (..., n, n) symmetric PSD.
        p, epsilon: as ``eigh_inverse_root``.
        eigvecs: (..., n, n) orthogonal, e.g. from an earlier ``eigh_inverse_root``.
        rtol: accepted bound on the relative 2-norm error of the result.

    Returns:
        (root, accepted): ``root[b]`` is valid only where ``accepted[b]``.
    """
    _check_square(A)
    s = 1.0 / p
    Q = eigvecs
    AQ = A @ Q
    diag = (Q * AQ).sum(dim=-2)  # B_ii = q_i^T A q_i
    d = (diag + epsilon).clamp_min(epsilon)
    # ||E||_F^2 = ||AQ||_F^2 - sum B_ii^2, in fp64 from fp32 terms; the fp32 rounding of AQ
    # blurs it by up to ~2 n u ||A||_F^2, so this can only reject, never accept.
    wide = torch.float64
    e2_cheap = AQ.to(wide).square().sum(dim=(-2, -1)) - diag.to(wide).square().sum(dim=-1)
    blur = 2 * A.shape[-1] * torch.finfo(A.dtype).eps * AQ.to(wide).square().sum(dim=(-2, -1))
    d_min = d.to(wide).amin(dim=-1)
    limit = _offdiag_limit(d_min, s, rtol)
    maybe = (e2_cheap - blur).clamp_min(0).sqrt() <= limit
    root = torch.empty_like(A)
    accepted = torch.zeros(A.shape[:-2], dtype=torch.bool, device=A.device)
    if not bool(maybe.any()):
        return root, accepted
    B = Q.mT @ AQ
    E = B - torch.diag_embed(B.diagonal(dim1=-2, dim2=-1))
    e = torch.linalg.matrix_norm(E.to(wide))
    accepted = (e <= limit) & torch.isfinite(e)
    da, db = d.unsqueeze(-1), d.unsqueeze(-2)
    # (a^-s - b^-s) / (a - b) without cancellation: b^-s expm1(-s log1p((a - b) / b)) / (a - b).
    diff = da - db
    same = diff == 0
    safe = torch.where(same, torch.ones_like(diff), diff)
    dd = db.pow(-s) * torch.expm1(-s * torch.log1p(diff / db)) / safe
    dd = torch.where(same, -s * db.pow(-s - 1), dd)
    F = dd * E + torch.diag_embed(d.pow(-s))
    root = (Q @ F) @ Q.mT
    return (root + root.mT) / 2, accepted


def _offdiag_limit(d_min: torch.Tensor, s: float, rtol: float) -> torch.Tensor:
    """Largest ||E||_F whose second-order remainder bound stays within ``rtol``.

    With x = d_min - e the smallest possible eigenvalue (Weyl), the remainder is at most
    s (s+1) x^(-s-2) e^2 (twice the scalar Taylor bound, for the matrix divided
    differences), and ||f(B)||_2 >= d_min^-s. Solving s (s+1) e^2 / x^2 (d_min/x)^s <= rtol
    for e: take x >= d_min / 2 (i.e. e <= d_min / 2), then (d_min / x)^s <= 2^s and
    e <= x sqrt(rtol / (s (s+1) 2^s)), with x = d_min - e: e <= d_min c / (1 + c).
    """
    c = math.sqrt(rtol / (s * (s + 1) * 2**s))
    return torch.minimum(d_min * c / (1 + c), d_min / 2)


def matrix_inverse_root(
    A: torch.Tensor,
    p: float,
    epsilon: float,
    *,
    method: str = 'auto',
    eigvecs: torch.Tensor | None = None,
    rtol: float = 1e-4,
    max_iters: int = 100,
    tol: float = 1e-6,
    fp64_fallback: bool = False,
) -> RootResult:
    """``(A + eps I)^(-1/p)`` for a batch of blocks, by the cheapest path that is accurate.

    Args:
        A: (b, n, n) or (n, n) symmetric PSD, fp32 or fp64.
        p: root order.
        epsilon: regularisation, as ``eigh_inverse_root``.
        method: 'eigh', 'newton' (falls back to eigh per block), 'warm' (needs
            ``eigvecs``; rejected blocks fall back to eigh) or 'auto' (module docstring).
        eigvecs: the eigenvectors returned by the previous call for the same blocks.
        rtol: accuracy the warm path must certify.
        max_iters, tol: the Newton iteration's limits.
        fp64_fallback: eigh in float64 on the fallback path.

    Returns:
        A ``RootResult``.
    """
    if method not in _METHODS:
        raise ValueError(f'method must be one of {_METHODS}, got {method!r}')
    _check_square(A)
    squeeze = A.ndim == 2
    A = A.unsqueeze(0) if squeeze else A
    if eigvecs is not None and squeeze:
        eigvecs = eigvecs.unsqueeze(0)
    stats = RootStats()
    rejected = torch.zeros(A.shape[0], dtype=torch.bool)
    if method == 'auto':
        if A.is_cuda and int(p) == p:
            method = 'newton'
        else:
            method = 'eigh'
    if method == 'warm' and eigvecs is None:
        method = 'eigh'
    if method == 'newton' and int(p) != p:
        method = 'eigh'

    if method == 'eigh':
        root, Q = eigh_inverse_root(A, p, epsilon, fp64=fp64_fallback)
        stats.eigh += A.shape[0]
    elif method == 'warm':
        root, ok = warm_inverse_root(A, p, epsilon, eigvecs, rtol=rtol)
        Q = eigvecs.clone()
        redo = (~ok).nonzero().flatten()
        rejected = ~ok.cpu()
        stats.warm += A.shape[0] - len(redo)
        stats.warm_rejections += len(redo)
        if len(redo):
            root[redo], Q[redo] = eigh_inverse_root(A[redo], p, epsilon, fp64=fp64_fallback)
            stats.eigh += len(redo)
    else:
        root, ok = newton_inverse_root(A, int(p), epsilon, max_iters=max_iters, tol=tol)
        Q = None
        redo = (~ok).nonzero().flatten()
        stats.newton += A.shape[0] - len(redo)
        stats.newton_fallbacks += len(redo)
        if len(redo):
            root[redo], _ = eigh_inverse_root(A[redo], p, epsilon, fp64=fp64_fallback)
            stats.eigh += len(redo)
    if squeeze:
        root, rejected = root[0], rejected[0]
        Q = None if Q is None else Q[0]
    return RootResult(root, Q, stats, rejected)


def relative_error(root: torch.Tensor, A: torch.Tensor, p: float, epsilon: float) -> torch.Tensor:
    """``||root - R64||_2 / ||R64||_2`` per block, R64 the float64 eigh reference."""
    ref, _ = eigh_inverse_root(A.double(), p, epsilon)
    return torch.linalg.matrix_norm(root.double() - ref, ord=2) / torch.linalg.matrix_norm(
        ref, ord=2
    )
