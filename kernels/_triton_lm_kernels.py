"""Triton kernels for the LM's RMSNorm and RoPE + QK-norm, defined on first use.

The host side (launchers, dispatch, autograd, references) is in kernels/rms_norm.py and
kernels/rope_qk_norm.py; the math each kernel implements is documented there. Like
kernels/_triton_optim_kernels.py, the ``@triton.jit`` definitions are created by
``_kernels(interpret)`` after importing triton, so importing this module imports nothing.

Conventions shared by all four kernels:
    * All arithmetic in fp32: loads are widened, stores round to the output pointer's dtype.
    * Rows are independent and contiguous (row r starts at r * row_len elements); a program
      handles ``ROWS`` rows as one 2-d tile (the RMSNorm backward loops over ``ITERS``
      such tiles, accumulating the weight gradient in registers).
    * Sums are ``SUM(x, axis)`` with the constexpr ``SUM = _kernels(...)['_sum']`` (see there).
    * ``SOFT_BF16``: triton 3.6's interpreter casts fp32 -> bf16 by truncation, compiled
      kernels round to nearest even (cvt.rn.bf16.f32). Under the interpreter a bf16 value
      is rounded with integer ops instead (written out at each use: the kernels are
      self-contained, as in _triton_optim_kernels), so CPU tests check the GPU's rounding.
      On the GPU (SOFT_BF16=False) the plain cast is used.
"""

import functools

from kernels._triton_optim_kernels import _interpret, _triton_importable  # noqa: F401

# Bound by _kernels(): the interpreter resolves `tl` in the kernel's module globals.
triton = None
tl = None


@functools.cache
def _kernels(interpret: bool) -> dict:
    """Imports triton and defines the kernels, once per interpreter mode (``triton.jit``
    fixes at decoration time whether a kernel is interpreted)."""
    global triton, tl
    import triton
    import triton.language as tl

    assert triton.knobs.runtime.interpret == interpret

    # Sums go through the constexpr SUM, passed to every kernel: tl.sum when compiled; in the
    # interpreter a plain Python function calling tl.reduce with an interpreted combine
    # function. tl.sum itself is a @triton.jit helper of triton.language, built for
    # compilation when triton was imported before TRITON_INTERPRET was set (as in a pytest
    # session), and the interpreter cannot call it; tl.zeros likewise (so tl.full below).
    # A constexpr (not a module global) keeps the two modes' definitions apart.
    if interpret:

        @triton.jit
        def _add(a, b):
            return a + b

        def _sum(x, axis):
            return tl.reduce(x, axis, _add)
    else:
        _sum = tl.sum

    @triton.jit
    def _rms_norm_fwd_kernel(
        x_ptr, w_ptr, y_ptr, rstd_ptr, n_rows, n_cols, eps,
        HAS_WEIGHT: tl.constexpr, SOFT_BF16: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
        SUM: tl.constexpr,
    ):  # fmt: skip
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < n_cols
        mask = (rows < n_rows)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        mean_sq = SUM(x * x, 1) / n_cols
        rstd = 1.0 / tl.sqrt_rn(mean_sq + eps)
        y = x * rstd[:, None]
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            y = y * w[None, :]
        if SOFT_BF16:
            y_out = y.to(tl.uint32, bitcast=True)
            y_out = (
                ((y_out + 0x7FFF + ((y_out >> 16) & 1)) >> 16)
                .to(tl.uint16)
                .to(tl.bfloat16, bitcast=True)
            )
        else:
            y_out = y.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + offs, y_out, mask=mask)
        tl.store(rstd_ptr + rows, rstd, mask=rows < n_rows)

    @triton.jit
    def _rms_norm_bwd_kernel(
        dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_partial_ptr, n_rows, n_cols,
        HAS_WEIGHT: tl.constexpr, SOFT_BF16: tl.constexpr, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
        ITERS: tl.constexpr, SUM: tl.constexpr,
    ):  # fmt: skip
        # dx = rstd * (dxhat - xhat * mean(dxhat * xhat)), dxhat = dy * w, xhat = x * rstd;
        # dw = Σ_rows dy * xhat: a program covers ITERS tiles of ROWS rows, accumulating one
        # fp32 partial row in registers (summed by the launcher). ITERS is a constexpr: the
        # 3.6 interpreter cannot loop to a runtime bound (it calls int() on a 1-element array).
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_D)
        cmask = cols < n_cols
        if HAS_WEIGHT:
            w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        dw = tl.full((BLOCK_D,), 0.0, tl.float32)  # not tl.zeros: see SUM
        for it in range(ITERS):
            rows = (pid * ITERS + it) * ROWS + tl.arange(0, ROWS)
            rmask = rows < n_rows
            mask = rmask[:, None] & cmask[None, :]
            offs = rows.to(tl.int64)[:, None] * n_cols + cols[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)[:, None]
            xhat = x * rstd
            if HAS_WEIGHT:
                dxhat = dy * w[None, :]
                dw += SUM(dy * xhat, 0)
            else:
                dxhat = dy
            dx = rstd * (dxhat - xhat * (SUM(dxhat * xhat, 1) / n_cols)[:, None])
            if SOFT_BF16:
                dx_out = dx.to(tl.uint32, bitcast=True)
                dx_out = (
                    ((dx_out + 0x7FFF + ((dx_out >> 16) & 1)) >> 16)
                    .to(tl.uint16)
                    .to(tl.bfloat16, bitcast=True)
                )
            else:
                dx_out = dx.to(dx_ptr.dtype.element_ty)
            tl.store(dx_ptr + offs, dx_out, mask=mask)
        if HAS_WEIGHT:
            tl.store(dw_partial_ptr + pid.to(tl.int64) * n_cols + cols, dw, mask=cmask)

    @triton.jit
    def _rope_qk_norm_fwd_kernel(
        x_ptr, cos_ptr, sin_ptr, scale_ptr, out_ptr, n_rows, seq_len, n_heads, eps,
        HALF: tl.constexpr, IS_Q: tl.constexpr, SOFT_BF16_IN: tl.constexpr, SOFT_BF16_OUT: tl.constexpr,
        BLOCK_H: tl.constexpr, ROWS: tl.constexpr, SUM: tl.constexpr,
    ):  # fmt: skip
        # Row r of (B*L*H, 2*HALF) is head r % H at position (r // H) % L. Pairs (2i, 2i+1)
        # rotate by the angle of (position, i); the rotated pair is rounded to x's dtype
        # (upstream's type_as), then y = u / ||u|| + eps, times attn_scale for q.
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        i = tl.arange(0, BLOCK_H)
        rmask = rows < n_rows
        mask = rmask[:, None] & (i < HALF)[None, :]
        pos = (rows // n_heads) % seq_len
        cs_offs = pos[:, None] * HALF + i[None, :]
        c = tl.load(cos_ptr + cs_offs, mask=mask, other=0.0)
        s = tl.load(sin_ptr + cs_offs, mask=mask, other=0.0)
        even = rows.to(tl.int64)[:, None] * (2 * HALF) + 2 * i[None, :]
        a = tl.load(x_ptr + even, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(x_ptr + even + 1, mask=mask, other=0.0).to(tl.float32)
        u0 = a * c - b * s
        u1 = b * c + a * s
        if SOFT_BF16_IN:
            u0 = u0.to(tl.uint32, bitcast=True)
            u0 = (
                ((u0 + 0x7FFF + ((u0 >> 16) & 1)) >> 16)
                .to(tl.uint16)
                .to(tl.bfloat16, bitcast=True)
                .to(tl.float32)
            )
            u1 = u1.to(tl.uint32, bitcast=True)
            u1 = (
                ((u1 + 0x7FFF + ((u1 >> 16) & 1)) >> 16)
                .to(tl.uint16)
                .to(tl.bfloat16, bitcast=True)
                .to(tl.float32)
            )
        else:
            u0 = u0.to(x_ptr.dtype.element_ty).to(tl.float32)
            u1 = u1.to(x_ptr.dtype.element_ty).to(tl.float32)
        norm = tl.sqrt_rn(SUM(u0 * u0 + u1 * u1, 1))
        norm = tl.where(rmask, norm, 1.0)[:, None]
        y0 = tl.div_rn(u0, norm) + eps
        y1 = tl.div_rn(u1, norm) + eps
        if IS_Q:
            scale = tl.load(scale_ptr)
            y0 = y0 * scale
            y1 = y1 * scale
        if SOFT_BF16_OUT:
            y0 = y0.to(tl.uint32, bitcast=True)
            y0 = (
                ((y0 + 0x7FFF + ((y0 >> 16) & 1)) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
            )
            y1 = y1.to(tl.uint32, bitcast=True)
            y1 = (
                ((y1 + 0x7FFF + ((y1 >> 16) & 1)) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
            )
        else:
            y0 = y0.to(out_ptr.dtype.element_ty)
            y1 = y1.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + even, y0, mask=mask)
        tl.store(out_ptr + even + 1, y1, mask=mask)

    @triton.jit
    def _rope_qk_norm_bwd_kernel(
        x_ptr, cos_ptr, sin_ptr, scale_ptr, dout_ptr, dx_ptr, dscale_partial_ptr,
        n_rows, seq_len, n_heads, eps,
        HALF: tl.constexpr, IS_Q: tl.constexpr, SOFT_BF16_IN: tl.constexpr, BLOCK_H: tl.constexpr,
        ROWS: tl.constexpr, SUM: tl.constexpr,
    ):  # fmt: skip
        # Recomputes u and yhat = u / ||u|| (cheaper than saving them: one read of x), then
        #   q: dscale += Σ g * (yhat + eps);  dy = scale * g   (k: dy = g)
        #   du = (dy - yhat * (yhat . dy)) / ||u||;  the rounding to x's dtype passes du
        #   through unchanged (type_as's backward), and the rotation's transpose gives
        #   da = du0 c + du1 s, db = du1 c - du0 s.
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        i = tl.arange(0, BLOCK_H)
        rmask = rows < n_rows
        mask = rmask[:, None] & (i < HALF)[None, :]
        pos = (rows // n_heads) % seq_len
        cs_offs = pos[:, None] * HALF + i[None, :]
        c = tl.load(cos_ptr + cs_offs, mask=mask, other=0.0)
        s = tl.load(sin_ptr + cs_offs, mask=mask, other=0.0)
        even = rows.to(tl.int64)[:, None] * (2 * HALF) + 2 * i[None, :]
        a = tl.load(x_ptr + even, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(x_ptr + even + 1, mask=mask, other=0.0).to(tl.float32)
        u0 = a * c - b * s
        u1 = b * c + a * s
        if SOFT_BF16_IN:
            u0 = u0.to(tl.uint32, bitcast=True)
            u0 = (
                ((u0 + 0x7FFF + ((u0 >> 16) & 1)) >> 16)
                .to(tl.uint16)
                .to(tl.bfloat16, bitcast=True)
                .to(tl.float32)
            )
            u1 = u1.to(tl.uint32, bitcast=True)
            u1 = (
                ((u1 + 0x7FFF + ((u1 >> 16) & 1)) >> 16)
                .to(tl.uint16)
                .to(tl.bfloat16, bitcast=True)
                .to(tl.float32)
            )
        else:
            u0 = u0.to(x_ptr.dtype.element_ty).to(tl.float32)
            u1 = u1.to(x_ptr.dtype.element_ty).to(tl.float32)
        norm = tl.sqrt_rn(SUM(u0 * u0 + u1 * u1, 1))
        norm = tl.where(rmask, norm, 1.0)[:, None]
        yh0 = tl.div_rn(u0, norm)
        yh1 = tl.div_rn(u1, norm)
        g0 = tl.load(dout_ptr + even, mask=mask, other=0.0).to(tl.float32)
        g1 = tl.load(dout_ptr + even + 1, mask=mask, other=0.0).to(tl.float32)
        if IS_Q:
            scale = tl.load(scale_ptr)
            part = tl.where(mask, g0 * (yh0 + eps) + g1 * (yh1 + eps), 0.0)
            tl.store(dscale_partial_ptr + tl.program_id(0), SUM(SUM(part, 1), 0))
            g0 = g0 * scale
            g1 = g1 * scale
        dot = SUM(yh0 * g0 + yh1 * g1, 1)[:, None]
        du0 = tl.div_rn(g0 - yh0 * dot, norm)
        du1 = tl.div_rn(g1 - yh1 * dot, norm)
        da = du0 * c + du1 * s
        db = du1 * c - du0 * s
        if SOFT_BF16_IN:
            da = da.to(tl.uint32, bitcast=True)
            da = (
                ((da + 0x7FFF + ((da >> 16) & 1)) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
            )
            db = db.to(tl.uint32, bitcast=True)
            db = (
                ((db + 0x7FFF + ((db >> 16) & 1)) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
            )
        else:
            da = da.to(dx_ptr.dtype.element_ty)
            db = db.to(dx_ptr.dtype.element_ty)
        tl.store(dx_ptr + even, da, mask=mask)
        tl.store(dx_ptr + even + 1, db, mask=mask)

    return {
        '_sum': _sum,
        '_rms_norm_fwd_kernel': _rms_norm_fwd_kernel,
        '_rms_norm_bwd_kernel': _rms_norm_bwd_kernel,
        '_rope_qk_norm_fwd_kernel': _rope_qk_norm_fwd_kernel,
        '_rope_qk_norm_bwd_kernel': _rope_qk_norm_bwd_kernel,
    }
