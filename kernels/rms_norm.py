"""RMSNorm with ``nn.RMSNorm`` semantics: a Triton forward/backward on CUDA, torch elsewhere.

``rms_norm(x, weight, eps)`` normalises over the last dim,
``y = x * rsqrt(mean(x**2, -1) + eps) * weight``, computed in fp32 and rounded once to the
output dtype. The output dtype is what ``nn.RMSNorm`` gives in torch 2.13 (checked on CPU
and in the autocast op lists, ATen/autocast_mode.h):
    * no autocast: x's dtype (torch's composite widens to fp32 and casts the product with
      the weight back to x's dtype, one rounding; a bf16 x with an fp32 weight gives bf16);
    * CUDA autocast: fp32 for bf16/fp16 x (``rms_norm`` is on autocast's fp32 list, so
      x and weight are cast to fp32 first). In finewebedu_lm the residual stream is fp32,
      so every norm there returns fp32 and the next Linear casts to bf16;
    * CPU autocast: x's dtype (``rms_norm`` has no AutocastCPU kernel).
``eps=None`` means ``torch.finfo(x's compute dtype).eps``, as nn.RMSNorm.

Paths, chosen per call (``_eligible``):
    * CUDA tensors, triton importable, x in fp32/bf16/fp16 with a contiguous last dim,
      weight None or a contiguous 1-d float tensor of size D <= 65536: the Triton kernels
      ``_rms_norm_fwd_kernel`` / ``_rms_norm_bwd_kernel`` (kernels/_triton_lm_kernels.py),
      wrapped as ``algoperf::rms_norm_fwd`` / ``algoperf::rms_norm_bwd`` torch.library
      custom ops (opaque to torch.compile, with fake implementations) under
      ``RMSNormFunction``. Forward saves the fp32 rstd (4 B per row) and x; backward
      recomputes xhat. Bytes per element: forward reads x, writes y; backward reads x and
      dy, writes dx (the weight gradient is one fp32 partial row per program, summed).
    * Otherwise (CPU, fp64, other layouts, no triton): ``torch.nn.functional.rms_norm``,
      torch's own implementation and autograd.
``rms_norm_reference`` is the formula in plain torch ops, for tests.

The custom ops are registered when this module is imported (dynamo cannot trace a
registration), confined to the ``algoperf`` namespace; triton is imported on first use.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from kernels import _triton_lm_kernels as _tk

__all__ = ['RMSNormFunction', 'rms_norm', 'rms_norm_reference']

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_D = 65536  # one row per register tile; the LM uses D = 1024
_NUM_WARPS = 4


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    if (
        x.device.type == 'cuda'
        and torch.is_autocast_enabled('cuda')
        and x.dtype
        in (
            torch.bfloat16,
            torch.float16,
        )
    ):
        return torch.float32
    return x.dtype


def _eps(x: torch.Tensor, eps: float | None) -> float:
    return torch.finfo(torch.promote_types(_out_dtype(x), x.dtype)).eps if eps is None else eps


def rms_norm_reference(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float | None = None
) -> torch.Tensor:
    """The formula in plain torch ops: fp32 (or fp64) math, one rounding to the output dtype."""
    out_dtype = _out_dtype(x)
    eps = _eps(x, eps)
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(xf.dtype)
    return y.to(out_dtype)


# ------------------------------------------------------------------- Triton launchers


def _interpret() -> bool:
    return _tk._triton_importable() and _tk._interpret()


def _block_d(n_cols: int) -> int:
    return max(16, 1 << (n_cols - 1).bit_length())


def _fwd_rows(block_d: int) -> int:
    """Rows per forward program: tiles of ~4096 elements (4 rows at D = 1024)."""
    return max(1, min(16, 4096 // block_d))


def _soft_bf16(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and _interpret()


def launch_rms_norm_fwd(
    x2d: torch.Tensor, weight: torch.Tensor | None, eps: float, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``_rms_norm_fwd_kernel`` on a contiguous (rows, D) x: returns (y, rstd fp32).

    CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (tests)."""
    n_rows, n_cols = x2d.shape
    y = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x2d.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x2d.device)
    if n_rows == 0:
        return y, rstd
    block_d = _block_d(n_cols)
    rows = _fwd_rows(block_d)
    kernels = _tk._kernels(_interpret())
    kernel = kernels['_rms_norm_fwd_kernel']
    w = weight if weight is not None else rstd  # unused pointer when HAS_WEIGHT=False
    kernel[(_cdiv(n_rows, rows),)](
        x2d, w, y, rstd, n_rows, n_cols, eps,
        HAS_WEIGHT=weight is not None, SOFT_BF16=_soft_bf16(out_dtype), BLOCK_D=block_d, ROWS=rows,
        SUM=kernels['_sum'], num_warps=_NUM_WARPS,
    )  # fmt: skip
    return y, rstd


def _bwd_iters(n_rows: int, rows: int) -> int:
    """Row tiles per backward program: 8 (32 rows at D = 1024: a 16 x 1024 per-GPU batch
    gives 512 programs, ~4 per H100/H200 SM, and a 2 MB fp32 partial weight gradient),
    fewer when the input is small."""
    return max(1, min(8, _cdiv(n_rows, rows)))


def launch_rms_norm_bwd(
    dy2d: torch.Tensor, x2d: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Runs ``_rms_norm_bwd_kernel``: returns (dx in x's dtype, dw in weight's dtype or None)."""
    n_rows, n_cols = x2d.shape
    dx = torch.empty_like(x2d)
    if n_rows == 0:
        dw = None if weight is None else torch.zeros_like(weight)
        return dx, dw
    block_d = _block_d(n_cols)
    rows = _fwd_rows(block_d)
    iters = _bwd_iters(n_rows, rows)
    programs = _cdiv(n_rows, rows * iters)
    partial = torch.empty(
        (programs, n_cols) if weight is not None else (1,), dtype=torch.float32, device=x2d.device
    )
    kernels = _tk._kernels(_interpret())
    kernel = kernels['_rms_norm_bwd_kernel']
    kernel[(programs,)](
        dy2d, x2d, weight if weight is not None else rstd, rstd, dx, partial, n_rows, n_cols,
        HAS_WEIGHT=weight is not None, SOFT_BF16=_soft_bf16(x2d.dtype), BLOCK_D=block_d,
        ROWS=rows, ITERS=iters, SUM=kernels['_sum'], num_warps=_NUM_WARPS,
    )  # fmt: skip
    dw = None if weight is None else partial.sum(0).to(weight.dtype)
    return dx, dw


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ------------------------------------------------------------ custom ops and autograd


@torch.library.custom_op('algoperf::rms_norm_fwd', mutates_args=())
def _rms_norm_fwd_op(
    x2d: torch.Tensor, weight: torch.Tensor | None, eps: float, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.cuda.device(x2d.device):
        return launch_rms_norm_fwd(x2d, weight, eps, out_dtype)


@_rms_norm_fwd_op.register_fake
def _(x2d, weight, eps, out_dtype):
    return x2d.new_empty(x2d.shape, dtype=out_dtype), x2d.new_empty(
        x2d.shape[0], dtype=torch.float32
    )


@torch.library.custom_op('algoperf::rms_norm_bwd', mutates_args=())
def _rms_norm_bwd_op(
    dy2d: torch.Tensor, x2d: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.cuda.device(x2d.device):
        dx, dw = launch_rms_norm_bwd(dy2d.contiguous(), x2d, weight, rstd)
    return dx, dw if dw is not None else x2d.new_empty(0)


@_rms_norm_bwd_op.register_fake
def _(dy2d, x2d, weight, rstd):
    return torch.empty_like(x2d), (
        torch.empty_like(weight) if weight is not None else x2d.new_empty(0)
    )


class RMSNormFunction(torch.autograd.Function):
    """Triton RMSNorm (CUDA): forward saves x and the fp32 rstd."""

    @staticmethod
    def forward(ctx, x, weight, eps, out_dtype):
        x2d = x.reshape(-1, x.shape[-1]).contiguous()
        y, rstd = _rms_norm_fwd_op(x2d, weight, eps, out_dtype)
        ctx.save_for_backward(x2d, weight, rstd)
        ctx.x_shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2d, weight, rstd = ctx.saved_tensors
        dx, dw = _rms_norm_bwd_op(dy.reshape(x2d.shape), x2d, weight, rstd)
        return dx.reshape(ctx.x_shape), (dw if weight is not None else None), None, None


@functools.cache
def _triton_ok() -> bool:
    return _tk._triton_importable()


def _eligible(x: torch.Tensor, weight: torch.Tensor | None) -> bool:
    """Whether the Triton kernels take this call (module docstring)."""
    return (
        x.device.type == 'cuda'
        and x.dtype in _TRITON_DTYPES
        and x.dim() >= 1
        and 0 < x.shape[-1] <= _MAX_D
        and x.stride(-1) == 1
        and (
            weight is None
            or (
                weight.device == x.device
                and weight.dtype in _TRITON_DTYPES
                and weight.dim() == 1
                and weight.shape[0] == x.shape[-1]
                and weight.is_contiguous()
            )
        )
        and _triton_ok()
    )


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None, eps: float | None = None
) -> torch.Tensor:
    """``nn.RMSNorm`` over the last dim of ``x`` (module docstring for dtypes and paths).

    Args:
        x: (..., D) float tensor.
        weight: (D,) scale or None.
        eps: added to the mean square; None means finfo(dtype).eps, as nn.RMSNorm.
    """
    if not _eligible(x, weight):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    out_dtype = _out_dtype(x)
    return RMSNormFunction.apply(x, weight, _eps(x, eps), out_dtype)


# ------------------------------------------------------------ ahead-of-time configs

_AOT_TYPES = {torch.float32: '*fp32', torch.bfloat16: '*bf16', torch.float16: '*fp16'}


def _aot_configs() -> list[tuple[object, dict[str, str], dict[str, object], dict[str, int]]]:
    """(kernel, signature, constexprs, options) for ``triton.compile``: what the
    launchers use on CUDA at the LM's D = 1024 with a weight, for every x dtype and both
    output dtypes (x's; fp32 under autocast). Compiled, not interpreted, kernels."""
    kernels = _tk._kernels(False)
    block_d = _block_d(1024)
    rows = _fwd_rows(block_d)
    configs = []
    for x_dtype in _TRITON_DTYPES:
        for y_dtype in dict.fromkeys((x_dtype, torch.float32)):
            x_t, y_t = _AOT_TYPES[x_dtype], _AOT_TYPES[y_dtype]
            fwd = {'HAS_WEIGHT': True, 'SOFT_BF16': False, 'BLOCK_D': block_d, 'ROWS': rows,
                   'SUM': kernels['_sum']}  # fmt: skip
            configs.append((
                kernels['_rms_norm_fwd_kernel'],
                {'x_ptr': x_t, 'w_ptr': '*fp32', 'y_ptr': y_t, 'rstd_ptr': '*fp32',
                 'n_rows': 'i32', 'n_cols': 'i32', 'eps': 'fp32', **dict.fromkeys(fwd, 'constexpr')},
                fwd,
                {'num_warps': _NUM_WARPS},
            ))  # fmt: skip
            bwd = {'HAS_WEIGHT': True, 'SOFT_BF16': False, 'BLOCK_D': block_d, 'ROWS': rows,
                   'ITERS': _bwd_iters(1 << 20, rows), 'SUM': kernels['_sum']}  # fmt: skip
            configs.append((
                kernels['_rms_norm_bwd_kernel'],
                {'dy_ptr': y_t, 'x_ptr': x_t, 'w_ptr': '*fp32', 'rstd_ptr': '*fp32', 'dx_ptr': x_t,
                 'dw_partial_ptr': '*fp32', 'n_rows': 'i32', 'n_cols': 'i32',
                 **dict.fromkeys(bwd, 'constexpr')},
                bwd,
                {'num_warps': _NUM_WARPS},
            ))  # fmt: skip
    return configs


def __getattr__(name: str):
    # AOT_CONFIGS is built on access (it needs triton), keeping the import side-effect free.
    if name == 'AOT_CONFIGS':
        return _aot_configs()
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
