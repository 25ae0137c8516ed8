"""Batched coupled-Newton inverse roots as Triton matmuls (the GPU path of matrix_root).

One kernel, ``_bmm_kernel``: ``C[b] = op_a(A[b]) @ op_b(B[b])`` for a stack of n x n fp32
matrices, one launch for the whole stack (grid = row tiles x column tiles x blocks), fp32
accumulation. ``op(Y)`` is ``Y`` or the Newton factor ``T = alpha I + beta Y`` formed on
the fly from the loaded tile, so ``T = ((p+1) I - M) / p`` is never written to memory;
optionally the epilogue folds ``max|C - I|`` of each block into a residual vector with an
atomic max, so the convergence test costs no extra pass.

Per iteration with p = 4 (``matrix_root.newton_inverse_root_reference`` is the spec):
    P2 = T @ T, P4 = P2 @ P2, M <- P4 @ M (+ residual), X <- X @ T:
four launches, 8 n^3 flops per block, the floor for p = 4 (Distributed Shampoo's
CoupledNewton does the same four products, one block at a time). Other integer p use
binary powering: ceil(log2 p) squarings plus popcount(p) products, plus X's one.

Why batched: a 1024 x 1024 product has 64 output tiles of 128 x 128, fewer than an H100's
132 SMs; stacking Shampoo's same-size blocks in one launch fills the machine
(perf_anchors.md §2.3). The block size n is a compile-time constant: Shampoo has a
handful of block sizes, and it lets the compiler drop the k-loop's bounds arithmetic (and
the interpreter needs it: triton 3.6 with numpy 2.4 cannot loop to a runtime bound). Operand precision is IEEE fp32 by default; 'tf32x3' and 'tf32'
trade accuracy for tensor-core speed (Distributed Shampoo disables tf32 for its roots).

Runs natively on CUDA tensors and, with ``TRITON_INTERPRET=1``, on CPU tensors in the
Triton interpreter (how CI tests it). Importing this module imports nothing from triton.
"""

import functools

import torch

__all__ = ['AOT_CONFIGS', 'available', 'bmm', 'coupled_newton']

triton = None  # bound by _kernels(); the interpreter resolves `tl` in module globals
tl = None


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def _interpret() -> bool:
    from triton import knobs

    return bool(knobs.runtime.interpret)


def available() -> bool:
    """True if triton imports and CUDA is present or the interpreter is on."""
    return _triton_importable() and (torch.cuda.is_available() or _interpret())


@functools.cache
def _kernels(interpret: bool):
    global triton, tl
    import triton
    import triton.language as tl

    assert triton.knobs.runtime.interpret == interpret

    @triton.jit
    def _bmm_kernel(
        a_ptr, b_ptr, c_ptr, res_ptr, alpha, beta, n: tl.constexpr,
        OP_A: tl.constexpr, OP_B: tl.constexpr, RESIDUAL: tl.constexpr, PRECISION: tl.constexpr,
        INTERPRETED: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        blk = tl.program_id(2)
        base = blk.to(tl.int64) * n * n
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        acc = tl.full((BM, BN), 0.0, tl.float32)
        for k0 in range(0, n, BK):
            rk = k0 + tl.arange(0, BK)
            a_mask = (rm[:, None] < n) & (rk[None, :] < n)
            b_mask = (rk[:, None] < n) & (rn[None, :] < n)
            a = tl.load(a_ptr + base + rm[:, None] * n + rk[None, :], mask=a_mask, other=0.0)
            b = tl.load(b_ptr + base + rk[:, None] * n + rn[None, :], mask=b_mask, other=0.0)
            # The identity term lands on padded diagonal entries too; those rows/columns
            # meet zero padding in the other operand, so they add nothing.
            if OP_A:
                a = beta * a + tl.where(rm[:, None] == rk[None, :], alpha, 0.0)
            if OP_B:
                b = beta * b + tl.where(rk[:, None] == rn[None, :], alpha, 0.0)
            acc += tl.dot(a, b, input_precision=PRECISION)
        c_mask = (rm[:, None] < n) & (rn[None, :] < n)
        tl.store(c_ptr + base + rm[:, None] * n + rn[None, :], acc, mask=c_mask)
        if RESIDUAL:
            dev = tl.abs(acc - tl.where(rm[:, None] == rn[None, :], 1.0, 0.0))
            dev = tl.where(c_mask, dev, 0.0)
            if INTERPRETED:
                # Every lane to one address: the interpreter cannot run tl.max (a
                # @triton.jit helper of triton.language, built for compilation when triton
                # was imported before TRITON_INTERPRET was set).
                tl.atomic_max(res_ptr + blk + 0 * (rm[:, None] + rn[None, :]), dev)
            else:
                tl.atomic_max(res_ptr + blk, tl.max(tl.max(dev, axis=1), axis=0))

    return _bmm_kernel


def _aot_configs() -> list[tuple]:
    """(kernel, signature, constexprs, options) of the launches ``coupled_newton`` makes.

    Shampoo's block sizes 128, 512 and 1024 with their compiled tiles (``_tiles``), each
    operand transform ``bmm`` is called with (plain, T on B, T on A with the residual, T
    on both), in the three precisions. For tests/kernels/test_triton_aot_sm90.py.
    """
    kernel = _kernels(False)
    sig = {'a_ptr': '*fp32', 'b_ptr': '*fp32', 'c_ptr': '*fp32', 'res_ptr': '*fp32',
           'alpha': 'fp32', 'beta': 'fp32'}  # fmt: skip
    ops = [(False, False, False), (False, True, False), (True, False, True), (True, True, False),
           (False, False, True)]  # fmt: skip
    out = []
    for n in (128, 512, 1024):
        bm, bn, bk = _compiled_tiles(n)
        for precision in ('ieee', 'tf32x3', 'tf32'):
            for op_a, op_b, residual in ops:
                const = {'n': n, 'OP_A': op_a, 'OP_B': op_b, 'RESIDUAL': residual,
                         'PRECISION': precision, 'INTERPRETED': False, 'BM': bm, 'BN': bn,
                         'BK': bk}  # fmt: skip
                out.append((kernel, dict(sig), const, {'num_warps': _num_warps(bm, bn)}))
    return out


AOT_CONFIGS = _aot_configs  # a callable: importing this module imports no triton


def _tiles(n: int) -> tuple[int, int, int]:
    if _interpret():
        return 32, 32, 32  # fewer, larger programs: the interpreter's cost is per program
    return _compiled_tiles(n)


def _compiled_tiles(n: int) -> tuple[int, int, int]:
    return (64, 64, 32) if n > 256 else (32, 32, 32)


def _num_warps(bm: int, bn: int) -> int:
    # 64x64 fp32 tiles at 4 warps spilled 440 bytes on sm_90 with ieee precision and the
    # transform on B (255 registers; tests/kernels/test_triton_aot_sm90.py): 8 warps halve
    # the per-thread accumulator and operand fragments.
    return 8 if bm * bn >= 64 * 64 else 4


def bmm(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    op_a: tuple[float, float] | None = None,
    op_b: tuple[float, float] | None = None,
    residual: torch.Tensor | None = None,
    precision: str = 'ieee',
) -> torch.Tensor:
    """``op_a(a) @ op_b(b)`` over a stack (B, n, n) of fp32 matrices in one launch.

    Args:
        a, b: contiguous fp32 (B, n, n) on one device.
        op_a, op_b: (alpha, beta) to use ``alpha I + beta Y`` in place of the operand.
        residual: (B,) fp32 zeros; receives ``max|C - I|`` per block (atomic max).
        precision: tl.dot input precision: 'ieee', 'tf32x3' or 'tf32'.
    """
    if a.ndim != 3 or a.shape != b.shape or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f'expected two (B, n, n) stacks of one shape, got {tuple(a.shape)} and {tuple(b.shape)}'
        )
    if a.dtype != torch.float32 or b.dtype != torch.float32:
        raise ValueError(f'fp32 only, got {a.dtype} and {b.dtype}')
    if not available():
        raise RuntimeError(
            'triton is not importable, or neither CUDA nor TRITON_INTERPRET=1 is available'
        )
    a, b = a.contiguous(), b.contiguous()
    nb, n, _ = a.shape
    c = torch.empty_like(a)
    if nb == 0 or n == 0:
        return c
    kernel = _kernels(_interpret())
    BM, BN, BK = _tiles(n)
    grid = (triton.cdiv(n, BM), triton.cdiv(n, BN), nb)
    alpha_a, beta_a = op_a or (0.0, 1.0)
    alpha_b, beta_b = op_b or (0.0, 1.0)
    if op_a is not None and op_b is not None and op_a != op_b:
        raise ValueError('op_a and op_b must be the same transform when both are given')
    alpha, beta = (alpha_a, beta_a) if op_a is not None else (alpha_b, beta_b)
    kernel[grid](
        a, b, c, residual if residual is not None else c, float(alpha), float(beta), n,
        OP_A=op_a is not None, OP_B=op_b is not None, RESIDUAL=residual is not None,
        PRECISION=precision, INTERPRETED=_interpret(), BM=BM, BN=BN, BK=BK,
        num_warps=_num_warps(BM, BN),
    )  # fmt: skip
    return c


def coupled_newton(
    X: torch.Tensor,
    M: torch.Tensor,
    p: int,
    *,
    max_iters: int = 100,
    tol: float = 1e-6,
    precision: str = 'ieee',
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the coupled Newton iteration from (X0, M0) (see ``matrix_root._newton_init``).

    Returns:
        (X symmetrised, converged per block), as ``newton_inverse_root_reference``.
    """
    squeeze = X.ndim == 2
    if squeeze:
        X, M = X.unsqueeze(0), M.unsqueeze(0)
    X, M = X.contiguous(), M.contiguous()
    T = ((p + 1) / p, -1.0 / p)  # T = alpha I + beta M
    res = torch.full(X.shape[:1], float('inf'), dtype=torch.float32, device=X.device)
    for _ in range(max_iters):
        res = torch.zeros(X.shape[:1], dtype=torch.float32, device=X.device)
        X_next = bmm(X, M, op_b=T, precision=precision)
        M = _power_times(M, p, T, res, precision)
        X = X_next
        if bool((res <= tol).all()):
            break
    ok = (
        (res <= tol)
        & torch.isfinite(X).flatten(1).all(dim=1)
        & torch.isfinite(M).flatten(1).all(dim=1)
    )
    X = (X + X.mT) / 2
    return (X[0], ok[0]) if squeeze else (X, ok)


def _power_times(
    M: torch.Tensor, p: int, T: tuple[float, float], res: torch.Tensor, precision: str
) -> torch.Tensor:
    """``T(M)^p @ M`` by binary powering; the last product writes the residual."""
    result = M
    base, base_is_t = M, True  # base stands for T(M) until it is first squared
    e = p
    while e:
        if e & 1:
            last = e == 1
            result = bmm(
                base,
                result,
                op_a=T if base_is_t else None,
                residual=res if last else None,
                precision=precision,
            )
        e >>= 1
        if e:
            base = bmm(
                base,
                base,
                op_a=T if base_is_t else None,
                op_b=T if base_is_t else None,
                precision=precision,
            )
            base_is_t = False
    return result
