"""The Triton kernels behind kernels/triton_optim.py, defined on first use.

Split from triton_optim.py (the host side: plans, launches, public API). The kernel
bodies, their math and their rounding are documented there; this module only holds the
``@triton.jit`` definitions, which must live in a module whose globals bind ``triton``
and ``tl`` (the interpreter resolves them there, not in a closure).
"""

import functools

import torch

# Bound by _kernels() on first use. Triton's interpreter looks up `triton.language` in the
# kernel's module globals (not in a closure), so the lazy import binds module names.
triton = None
tl = None


def _interpret() -> bool:
    """Whether triton interprets kernels: ``TRITON_INTERPRET=1``, as read by triton itself.

    Only called once triton is known to import.
    """
    from triton import knobs

    return bool(knobs.runtime.interpret)


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def available() -> bool:
    """Whether these kernels can run here: triton imports and CUDA or the interpreter is on.

    Returns:
        True if ``triton`` is importable and either a CUDA device is available or
        ``TRITON_INTERPRET=1`` is set (then CPU tensors run in the Triton interpreter).
    """
    return _triton_importable() and (_interpret() or torch.cuda.is_available())


@functools.cache
def _kernels(interpret: bool):
    """Imports triton and defines the kernels, once per interpreter mode.

    ``triton.jit`` decides at decoration time whether a kernel is interpreted (from
    ``TRITON_INTERPRET``), so the cache is keyed on that mode: a process can run both,
    e.g. the interpreter tests and the CUDA test of one pytest session.
    """
    global triton, tl
    import triton
    import triton.language as tl

    assert triton.knobs.runtime.interpret == interpret

    # The kernels are self-contained (no shared @triton.jit helpers): the interpreter
    # re-executes each kernel's source in this module's globals, where helpers defined in
    # this function would not be found. Every kernel starts the same way:
    #   pid -> (tensor t, block b) from the chunk tables; n = numel of t; the base
    #   addresses of t in each list, cast to typed pointers and marked 16-byte aligned if
    #   ALIGNED; offs = b * BLOCK + arange. Then the body runs twice, statically: variant 0
    #   unmasked for a full chunk, variant 1 masked for the tail chunk; a runtime branch on
    #   the chunk picks one, so full chunks compile to vector loads.
    # SOFT_BF16 (interpreter only): triton 3.6's interpreter casts fp32 -> bf16 by
    #   truncation (runtime/interpreter.py _convert_float, no rounding; its 'rtne' mode
    #   rounds half up and drops the carry), while compiled kernels round to nearest even
    #   (cvt.rn.bf16.f32). The interpreted kernels round with integer ops instead, so CPU
    #   tests check the GPU's rounding. (NaN payloads aside, the two agree bit for bit.)

    @triton.jit
    def _adam_kernel(
        p_ptrs, g_ptrs, m_ptrs, v_ptrs, numels, chunk_tensors, chunk_blocks, hyper_ptr,
        beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
        bias_correction1, bias_correction2,
        PARAM_DTYPE: tl.constexpr, NESTEROV: tl.constexpr, DEVICE_BIAS: tl.constexpr, ALIGNED: tl.constexpr,
        SOFT_BF16: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        t = tl.load(chunk_tensors + pid)
        start = tl.load(chunk_blocks + pid) * BLOCK
        n = tl.load(numels + t)
        p_ptr = tl.load(p_ptrs + t).to(tl.pointer_type(PARAM_DTYPE))
        g_ptr = tl.load(g_ptrs + t).to(tl.pointer_type(PARAM_DTYPE))
        m_ptr = tl.load(m_ptrs + t).to(tl.pointer_type(tl.float32))
        v_ptr = tl.load(v_ptrs + t).to(tl.pointer_type(tl.float32))
        if ALIGNED:
            p_ptr = tl.multiple_of(p_ptr, 16)
            g_ptr = tl.multiple_of(g_ptr, 16)
            m_ptr = tl.multiple_of(m_ptr, 16)
            v_ptr = tl.multiple_of(v_ptr, 16)
        offs = start + tl.arange(0, BLOCK)
        lr = tl.load(hyper_ptr)
        if DEVICE_BIAS:  # capturable: the step's bias corrections live on the device too
            bias_correction1 = tl.load(hyper_ptr + 1)
            bias_correction2 = tl.load(hyper_ptr + 2)
        for variant in tl.static_range(2):
            if variant == 0:
                mask = None
                active = start + BLOCK <= n
            else:
                mask = offs < n
                active = start + BLOCK > n
            if active:
                p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
                g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
                m = tl.load(m_ptr + offs, mask=mask)
                v = tl.load(v_ptr + offs, mask=mask)
                p = p * (1.0 - lr * weight_decay)
                m = beta1 * m + one_minus_beta1 * g
                v = beta2 * v + one_minus_beta2 * (g * g)
                if NESTEROV:
                    m_num = beta1 * m + one_minus_beta1 * g
                else:
                    m_num = m
                m_hat = tl.div_rn(m_num, bias_correction1)
                denom = tl.sqrt_rn(tl.div_rn(v, bias_correction2)) + eps
                p = p - tl.div_rn(lr * m_hat, denom)
                if SOFT_BF16:  # round to nearest even by hand; see _kernels()
                    bits = p.to(tl.uint32, bitcast=True)
                    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
                    p_out = bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
                else:
                    p_out = p.to(PARAM_DTYPE)
                tl.store(p_ptr + offs, p_out, mask=mask)
                tl.store(m_ptr + offs, m, mask=mask)
                tl.store(v_ptr + offs, v, mask=mask)

    @triton.jit
    def _sgd_kernel(
        p_ptrs, g_ptrs, buf_ptrs, numels, chunk_tensors, chunk_blocks, hyper_ptr,
        momentum, one_minus_dampening, weight_decay,
        PARAM_DTYPE: tl.constexpr, HAS_MOMENTUM: tl.constexpr, FIRST_STEP: tl.constexpr,
        NESTEROV: tl.constexpr, ALIGNED: tl.constexpr, SOFT_BF16: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        t = tl.load(chunk_tensors + pid)
        start = tl.load(chunk_blocks + pid) * BLOCK
        n = tl.load(numels + t)
        p_ptr = tl.load(p_ptrs + t).to(tl.pointer_type(PARAM_DTYPE))
        g_ptr = tl.load(g_ptrs + t).to(tl.pointer_type(PARAM_DTYPE))
        buf_ptr = tl.load(buf_ptrs + t).to(tl.pointer_type(tl.float32))
        if ALIGNED:
            p_ptr = tl.multiple_of(p_ptr, 16)
            g_ptr = tl.multiple_of(g_ptr, 16)
            buf_ptr = tl.multiple_of(buf_ptr, 16)
        offs = start + tl.arange(0, BLOCK)
        lr = tl.load(hyper_ptr)
        for variant in tl.static_range(2):
            if variant == 0:
                mask = None
                active = start + BLOCK <= n
            else:
                mask = offs < n
                active = start + BLOCK > n
            if active:
                p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
                g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
                g = g + weight_decay * p
                if HAS_MOMENTUM:
                    if FIRST_STEP:
                        buf = g
                    else:
                        buf = tl.load(buf_ptr + offs, mask=mask)
                        buf = momentum * buf + one_minus_dampening * g
                    tl.store(buf_ptr + offs, buf, mask=mask)
                    if NESTEROV:
                        g = g + momentum * buf
                    else:
                        g = buf
                p = p - lr * g
                if SOFT_BF16:  # round to nearest even by hand; see _kernels()
                    bits = p.to(tl.uint32, bitcast=True)
                    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
                    p_out = bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
                else:
                    p_out = p.to(PARAM_DTYPE)
                tl.store(p_ptr + offs, p_out, mask=mask)

    @triton.jit
    def _schedule_free_adamw_kernel(
        y_ptrs, g_ptrs, z_ptrs, v_ptrs, numels, chunk_tensors, chunk_blocks, hyper_ptr,
        beta2, one_minus_beta2, bias_correction2, eps, weight_decay,
        PARAM_DTYPE: tl.constexpr, ALIGNED: tl.constexpr, SOFT_BF16: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        t = tl.load(chunk_tensors + pid)
        start = tl.load(chunk_blocks + pid) * BLOCK
        n = tl.load(numels + t)
        y_ptr = tl.load(y_ptrs + t).to(tl.pointer_type(PARAM_DTYPE))
        g_ptr = tl.load(g_ptrs + t).to(tl.pointer_type(PARAM_DTYPE))
        z_ptr = tl.load(z_ptrs + t).to(tl.pointer_type(tl.float32))
        v_ptr = tl.load(v_ptrs + t).to(tl.pointer_type(tl.float32))
        if ALIGNED:
            y_ptr = tl.multiple_of(y_ptr, 16)
            g_ptr = tl.multiple_of(g_ptr, 16)
            z_ptr = tl.multiple_of(z_ptr, 16)
            v_ptr = tl.multiple_of(v_ptr, 16)
        offs = start + tl.arange(0, BLOCK)
        lr = tl.load(hyper_ptr)
        ckp1 = tl.load(hyper_ptr + 1)
        y_lr = tl.load(hyper_ptr + 2)
        for variant in tl.static_range(2):
            if variant == 0:
                mask = None
                active = start + BLOCK <= n
            else:
                mask = offs < n
                active = start + BLOCK > n
            if active:
                y = tl.load(y_ptr + offs, mask=mask).to(tl.float32)
                g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
                z = tl.load(z_ptr + offs, mask=mask)
                v = tl.load(v_ptr + offs, mask=mask)
                v = beta2 * v + one_minus_beta2 * (g * g)
                d = tl.div_rn(g, tl.sqrt_rn(tl.div_rn(v, bias_correction2)) + eps)
                d = d + weight_decay * y  # decay evaluated at the old y
                y = y + ckp1 * (z - y)
                y = y + y_lr * d
                z = z - lr * d
                if SOFT_BF16:  # round to nearest even by hand; see _kernels()
                    bits = y.to(tl.uint32, bitcast=True)
                    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
                    y_out = bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
                else:
                    y_out = y.to(PARAM_DTYPE)
                tl.store(y_ptr + offs, y_out, mask=mask)
                tl.store(z_ptr + offs, z, mask=mask)
                tl.store(v_ptr + offs, v, mask=mask)

    dtypes = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
    return {
        'adam': _adam_kernel,
        'sgd': _sgd_kernel,
        'schedule_free_adamw': _schedule_free_adamw_kernel,
        'dtypes': dtypes,
    }


def aot_configs() -> list[tuple]:
    """(kernel, signature, constexprs, options) for every compiled launch variant.

    What kernels/triton_optim.py launches on CUDA: each param dtype, aligned and
    misaligned groups, every flag combination the host code can pass (SOFT_BF16 is
    interpreter-only, so False), BLOCK = 2048 and 4 warps. Read by
    tests/kernels/test_triton_aot_sm90.py, which compiles each for sm_90.
    """
    from kernels._multi_tensor_plan import _BLOCK

    k = _kernels(False)
    flags = {
        'adam': [{'NESTEROV': n, 'DEVICE_BIAS': d} for n in (False, True) for d in (False, True)],
        'sgd': [
            {'HAS_MOMENTUM': False, 'FIRST_STEP': False, 'NESTEROV': False},
            {'HAS_MOMENTUM': True, 'FIRST_STEP': True, 'NESTEROV': False},
            {'HAS_MOMENTUM': True, 'FIRST_STEP': False, 'NESTEROV': False},
            {'HAS_MOMENTUM': True, 'FIRST_STEP': False, 'NESTEROV': True},
        ],
        'schedule_free_adamw': [{}],
    }
    tables = {'numels', 'chunk_tensors', 'chunk_blocks'}
    out = []
    for name, variants in flags.items():
        kernel = k[name]
        for torch_dtype, tl_dtype in k['dtypes'].items():
            for aligned in (True, False):
                for extra in variants:
                    const = {'PARAM_DTYPE': tl_dtype, 'ALIGNED': aligned, 'SOFT_BF16': False,
                             'BLOCK': _BLOCK, **extra}  # fmt: skip
                    sig = {}
                    for arg in kernel.arg_names:
                        if arg in const:
                            continue
                        sig[arg] = (
                            '*i64' if arg.endswith('_ptrs') or arg in tables
                            else '*fp32' if arg == 'hyper_ptr'
                            else 'fp32'
                        )  # fmt: skip
                    out.append((kernel, sig, const, {'num_warps': 4}))
    return out
