"""RoPE + QK-norm + ``attn_scale`` of finewebedu_lm's attention, fused on CUDA.

Upstream's PyTorch attention (algoperf_v1.md §1.2), for q and k of shape (B, L, H, Dh):
    1. RoPE on adjacent pairs: (x[2i], x[2i+1]) at position t rotated by t·θ_i, computed
       in fp32 and cast back with ``.type_as(q)``;
    2. QK-norm exactly as written: ``x = x / torch.norm(x, dim=-1, keepdim=True) + eps``,
       i.e. (x / ‖x‖) + eps elementwise (not x / (‖x‖ + eps));
    3. ``q = q * attn_scale`` (a learnable fp32 scalar; k is not scaled).
``rope_qk_norm_reference`` is that code in plain torch.

Output dtype. Upstream's result dtype depends on the context: under CUDA autocast
``torch.norm`` (``linalg_vector_norm``) is on autocast's fp32 list, so a bf16 q is divided
by an fp32 norm and the result is fp32; without autocast (and under CPU autocast, which
has no such rule) it stays in q's dtype, with the norm, the division, ``+ eps`` and the
scale each rounded to bf16. ``rope_qk_norm`` returns by default what upstream's code
returns in the current context (``out_dtype=None``); pass ``out_dtype=torch.bfloat16`` to
get the bf16 tensor that SDPA under autocast would cast the fp32 one to (the same values:
one round-to-nearest of the same fp32 numbers, at half the bytes written).

Paths, chosen per call (``_eligible``):
    * CUDA tensors, triton importable, q/k fp32/bf16/fp16 of one shape (B, L, H, Dh) with
      a contiguous last dim, Dh even and <= 1024, cos/sin (L', Dh/2) fp32 with L' >= L,
      attn_scale a 1-element float tensor: ``_rope_qk_norm_fwd_kernel`` /
      ``_rope_qk_norm_bwd_kernel`` (kernels/_triton_lm_kernels.py), as torch.library
      custom ops ``algoperf::rope_qk_norm_fwd/bwd`` under ``RopeQKNormFunction``. The
      kernels compute in fp32 with upstream's CUDA-autocast semantics: the rotated pair
      is rounded to q's dtype (type_as) and everything after it is fp32 math rounded once
      to the output dtype (without autocast, upstream's extra bf16 roundings of the norm,
      quotient and scale are not reproduced: <= ~2 bf16 ulps apart). The backward
      recomputes the rotation and norm from q and k (one read each) instead of saving
      fp32 intermediates, and returns grads for q, k and attn_scale (the latter as one
      fp32 partial sum per program, summed on the host side).
      Bytes per element: forward reads x, writes the output; backward reads x and the
      output's gradient and writes dx (+ cos/sin, L·Dh·4 B, shared by all heads).
    * Otherwise: the reference (plain torch; torch's autograd).
Non-contiguous q/k with a unit last stride (views of the fused w_qkv output) are copied
to contiguous before the kernels (one extra read and write).

Import registers the custom ops (namespace ``algoperf``; dynamo cannot trace a
registration) and imports no triton.
"""

from __future__ import annotations

import functools

import torch

from kernels import _triton_lm_kernels as _tk

__all__ = ['RopeQKNormFunction', 'rope_qk_norm', 'rope_qk_norm_reference']

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_HEAD_DIM = 1024
_NUM_WARPS = 4


def _default_out_dtype(q: torch.Tensor) -> torch.dtype:
    """Upstream's result dtype in the current context (module docstring)."""
    if (
        q.device.type == 'cuda'
        and torch.is_autocast_enabled('cuda')
        and q.dtype
        in (
            torch.bfloat16,
            torch.float16,
        )
    ):
        return torch.float32
    return q.dtype


def _rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Upstream's apply_rotary_emb_complex_like for one of q/k: fp32 math, then type_as."""
    length = x.shape[1]
    c = cos[:length, None, :].float()  # (L, 1, Dh/2): broadcast over batch and heads
    s = sin[:length, None, :].float()
    pairs = x.unflatten(-1, (-1, 2)).float()
    rotated = torch.stack(
        [pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 1] * c + pairs[..., 0] * s], -1
    ).flatten(3)
    return rotated.type_as(x)


def rope_qk_norm_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    attn_scale: torch.Tensor,
    eps: float,
    *,
    norm_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's code (module docstring). ``norm_dtype=torch.float32`` takes the norm in
    fp32 as CUDA autocast does (``torch.norm(x, ..., dtype=torch.float32)``), so CPU tests
    can reproduce upstream's GPU numerics; None leaves it to the context, as upstream."""

    def qk_norm(x):
        return x / torch.norm(x, dim=-1, keepdim=True, dtype=norm_dtype) + eps

    q_out = qk_norm(_rope_reference(q, cos, sin)) * attn_scale.reshape(())
    return q_out, qk_norm(_rope_reference(k, cos, sin))


# ------------------------------------------------------------------- Triton launchers


def _interpret() -> bool:
    return _tk._triton_importable() and _tk._interpret()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _block_h(half: int) -> int:
    return max(2, 1 << (half - 1).bit_length())


def _rows_per_program(block_h: int, backward: bool = False) -> int:
    """Rows per program: tiles of 1024 pairs forward (16 heads at Dh = 128) and 512 in the
    backward, which holds ~2x the live fp32 values: at 16 rows and 4 warps ptxas spills
    12 bytes on sm_90 (tests/kernels/test_triton_aot_sm90.py), at 8 it needs 48 registers."""
    return max(1, min(64, (512 if backward else 1024) // block_h))


def _soft_bf16(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and _interpret()


def _geometry(x: torch.Tensor) -> tuple[int, int, int, int]:
    batch, length, heads, head_dim = x.shape
    return batch * length * heads, length, heads, head_dim // 2


def launch_rope_qk_norm_fwd(q, k, cos, sin, attn_scale, eps: float, out_dtype: torch.dtype):
    """Runs ``_rope_qk_norm_fwd_kernel`` for q (scaled) and k: contiguous (B, L, H, Dh)
    inputs, cos/sin contiguous fp32 (>= L, Dh/2), attn_scale a 1-element fp32 tensor.
    CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1`` (tests)."""
    n_rows, length, heads, half = _geometry(q)
    block_h = _block_h(half)
    rows = _rows_per_program(block_h)
    kernels = _tk._kernels(_interpret())
    kernel = kernels['_rope_qk_norm_fwd_kernel']
    outs = []
    for x, is_q in ((q, True), (k, False)):
        out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        if n_rows:
            kernel[(_cdiv(n_rows, rows),)](
                x, cos, sin, attn_scale, out, n_rows, length, heads, eps,
                HALF=half, IS_Q=is_q, SOFT_BF16_IN=_soft_bf16(x.dtype),
                SOFT_BF16_OUT=_soft_bf16(out_dtype), BLOCK_H=block_h, ROWS=rows,
                SUM=kernels['_sum'], num_warps=_NUM_WARPS,
            )  # fmt: skip
        outs.append(out)
    return outs[0], outs[1]


def launch_rope_qk_norm_bwd(q, k, cos, sin, attn_scale, eps: float, grad_q_out, grad_k_out):
    """Runs ``_rope_qk_norm_bwd_kernel``: returns (dq, dk, d_attn_scale as fp32 0-d)."""
    n_rows, length, heads, half = _geometry(q)
    block_h = _block_h(half)
    rows = _rows_per_program(block_h, backward=True)
    programs = _cdiv(n_rows, rows)
    kernels = _tk._kernels(_interpret())
    kernel = kernels['_rope_qk_norm_bwd_kernel']
    partial = torch.zeros(max(programs, 1), dtype=torch.float32, device=q.device)
    grads = []
    for x, dout, is_q in ((q, grad_q_out, True), (k, grad_k_out, False)):
        dx = torch.empty_like(x)
        if n_rows:
            kernel[(programs,)](
                x, cos, sin, attn_scale, dout.contiguous(), dx, partial, n_rows, length, heads, eps,
                HALF=half, IS_Q=is_q, SOFT_BF16_IN=_soft_bf16(x.dtype), BLOCK_H=block_h, ROWS=rows,
                SUM=kernels['_sum'], num_warps=_NUM_WARPS,
            )  # fmt: skip
        grads.append(dx)
    return grads[0], grads[1], partial.sum()


# ------------------------------------------------------------ custom ops and autograd


def _device_ctx(t: torch.Tensor):
    return torch.cuda.device(t.device)


@torch.library.custom_op('algoperf::rope_qk_norm_fwd', mutates_args=())
def _fwd_op(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    attn_scale: torch.Tensor, eps: float, out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    with _device_ctx(q):
        return launch_rope_qk_norm_fwd(q, k, cos, sin, attn_scale, eps, out_dtype)


@_fwd_op.register_fake
def _(q, k, cos, sin, attn_scale, eps, out_dtype):
    return q.new_empty(q.shape, dtype=out_dtype), k.new_empty(k.shape, dtype=out_dtype)


@torch.library.custom_op('algoperf::rope_qk_norm_bwd', mutates_args=())
def _bwd_op(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    attn_scale: torch.Tensor, eps: float, grad_q_out: torch.Tensor, grad_k_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    with _device_ctx(q):
        return launch_rope_qk_norm_bwd(q, k, cos, sin, attn_scale, eps, grad_q_out, grad_k_out)


@_bwd_op.register_fake
def _(q, k, cos, sin, attn_scale, eps, grad_q_out, grad_k_out):
    return torch.empty_like(q), torch.empty_like(k), q.new_empty((), dtype=torch.float32)


class RopeQKNormFunction(torch.autograd.Function):
    """Triton RoPE + QK-norm (CUDA): saves q, k, cos, sin and the fp32 scale."""

    @staticmethod
    def forward(ctx, q, k, cos, sin, attn_scale, eps, out_dtype):
        q, k = q.contiguous(), k.contiguous()
        cos, sin = cos.float().contiguous(), sin.float().contiguous()
        scale32 = attn_scale.reshape(1).float()
        q_out, k_out = _fwd_op(q, k, cos, sin, scale32, eps, out_dtype)
        ctx.save_for_backward(q, k, cos, sin, scale32)
        ctx.eps = eps
        ctx.scale_meta = (attn_scale.shape, attn_scale.dtype)
        return q_out, k_out

    @staticmethod
    def backward(ctx, grad_q_out, grad_k_out):
        q, k, cos, sin, scale32 = ctx.saved_tensors
        if grad_q_out is None:
            grad_q_out = torch.zeros_like(q)
        if grad_k_out is None:
            grad_k_out = torch.zeros_like(k)
        dq, dk, dscale = _bwd_op(q, k, cos, sin, scale32, ctx.eps, grad_q_out, grad_k_out)
        shape, dtype = ctx.scale_meta
        return dq, dk, None, None, dscale.reshape(shape).to(dtype), None, None


@functools.cache
def _triton_ok() -> bool:
    return _tk._triton_importable()


def _eligible(q, k, cos, sin, attn_scale) -> bool:
    """Whether the Triton kernels take this call (module docstring)."""
    if not (
        q.device.type == 'cuda'
        and q.dim() == 4
        and k.shape == q.shape
        and k.dtype == q.dtype
        and q.dtype in _TRITON_DTYPES
        and k.device == q.device
        and q.stride(-1) == 1
        and k.stride(-1) == 1
    ):
        return False
    head_dim = q.shape[-1]
    return (
        head_dim % 2 == 0
        and 0 < head_dim <= _MAX_HEAD_DIM
        and cos.dim() == 2
        and cos.shape == sin.shape
        and cos.shape[0] >= q.shape[1]
        and cos.shape[1] == head_dim // 2
        and cos.device == q.device
        and sin.device == q.device
        and cos.is_floating_point()
        and attn_scale.numel() == 1
        and attn_scale.is_floating_point()
        and attn_scale.device == q.device
        and _triton_ok()
    )


def rope_qk_norm(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    attn_scale: torch.Tensor,
    eps: float,
    *,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE, then upstream's QK-norm, then q times ``attn_scale``.

    Args:
        q, k: (B, L, H, Dh) queries and keys (same shape and dtype).
        cos, sin: (L, Dh/2) fp32 tables of the rotation angles t·θ_i (rows >= L allowed).
        attn_scale: 0-d or 1-element learnable scale (fp32); gets a gradient.
        eps: added after the division (upstream's ``x / ‖x‖ + eps``).
        out_dtype: None for upstream's result dtype in this context (module docstring).

    Returns:
        (q_out, k_out), each (B, L, H, Dh).
    """
    if out_dtype is None:
        out_dtype = _default_out_dtype(q)
    if _eligible(q, k, cos, sin, attn_scale):
        return RopeQKNormFunction.apply(q, k, cos, sin, attn_scale, eps, out_dtype)
    q_out, k_out = rope_qk_norm_reference(q, k, cos, sin, attn_scale, eps)
    return q_out.to(out_dtype), k_out.to(out_dtype)


# ------------------------------------------------------------ ahead-of-time configs

_AOT_TYPES = {torch.float32: '*fp32', torch.bfloat16: '*bf16', torch.float16: '*fp16'}


def _aot_configs() -> list[tuple[object, dict[str, str], dict[str, object], dict[str, int]]]:
    """(kernel, signature, constexprs, options) for ``triton.compile``: what the
    launchers use on CUDA at the LM's Dh = 128, for q and k, every input dtype and both
    output dtypes (q's; fp32 under autocast). Compiled, not interpreted, kernels."""
    kernels = _tk._kernels(False)
    half = 64
    block_h = _block_h(half)
    rows = _rows_per_program(block_h)
    scalars = {'n_rows': 'i32', 'seq_len': 'i32', 'n_heads': 'i32', 'eps': 'fp32'}
    configs = []
    for x_dtype in _TRITON_DTYPES:
        for out_dtype in dict.fromkeys((x_dtype, torch.float32)):
            x_t, o_t = _AOT_TYPES[x_dtype], _AOT_TYPES[out_dtype]
            for is_q in (True, False):
                fwd = {'HALF': half, 'IS_Q': is_q, 'SOFT_BF16_IN': False, 'SOFT_BF16_OUT': False,
                       'BLOCK_H': block_h, 'ROWS': rows, 'SUM': kernels['_sum']}  # fmt: skip
                configs.append((
                    kernels['_rope_qk_norm_fwd_kernel'],
                    {'x_ptr': x_t, 'cos_ptr': '*fp32', 'sin_ptr': '*fp32', 'scale_ptr': '*fp32',
                     'out_ptr': o_t, **scalars, **dict.fromkeys(fwd, 'constexpr')},
                    fwd,
                    {'num_warps': _NUM_WARPS},
                ))  # fmt: skip
                bwd = {'HALF': half, 'IS_Q': is_q, 'SOFT_BF16_IN': False, 'BLOCK_H': block_h,
                       'ROWS': _rows_per_program(block_h, backward=True),
                       'SUM': kernels['_sum']}  # fmt: skip
                configs.append((
                    kernels['_rope_qk_norm_bwd_kernel'],
                    {'x_ptr': x_t, 'cos_ptr': '*fp32', 'sin_ptr': '*fp32', 'scale_ptr': '*fp32',
                     'dout_ptr': o_t, 'dx_ptr': x_t, 'dscale_partial_ptr': '*fp32', **scalars,
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
