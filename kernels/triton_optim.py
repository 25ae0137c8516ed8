"""Multi-tensor Triton kernels for three optimizer updates: AdamW/NAdamW, SGD, Schedule-Free.

Each public function updates whole lists of tensors in place with ONE kernel launch per
parameter dtype, whatever the number of tensors (ResNet-50: 161 tensors, one launch; a
second one only for tensors at addresses that are not 16-byte aligned):

    * ``adam_``: AdamW with decoupled weight decay; ``nesterov=True`` is AlgoPerf's NAdamW.
    * ``sgd_``: ``torch.optim.SGD`` (weight decay, momentum, dampening, Nesterov).
    * ``schedule_free_adamw_``: the inner loop of ``schedulefree.AdamWScheduleFree.step``.

The formulas are in each function's docstring; ``kernels/fused_optim.py`` holds the
plain-PyTorch references and the dispatch that routes CUDA tensors here.

Design (multi-tensor apply in Triton):
    Each tensor is cut into chunks of ``_BLOCK`` elements; one Triton program updates one
    chunk. The launch gets, per dtype group, int64 device tables: for every tensor list a
    row of base addresses (``data_ptr()``), a row of element counts, and for every chunk
    the index of its tensor and its block number. A program loads its chunk's entry, casts
    the addresses to typed pointers (``tl.pointer_type``) and streams the chunk. Full
    chunks take an unmasked path and the one tail chunk per tensor a masked one, so the
    bulk gets 16-byte vector loads and stores (``ld.global.v4.b32`` for fp32 in the PTX;
    a mask against a runtime length would force scalar accesses); addresses that are all
    16-byte aligned are declared so with ``tl.multiple_of`` (``ALIGNED``); tensors with
    any misaligned address (views at odd offsets) get their own scalar-access launch.
    The tables are built once per tensor lists and cached (LRU keyed on device, every
    ``data_ptr``, the params' numels and the params' and grads' dtypes), so a steady-state
    step only computes that key and launches. Shapes, strides, devices and dtypes are
    validated when a plan is built; a cache hit trusts them (same addresses, sizes and
    dtypes as a validated call).

    Table cost: 8 B per tensor and list plus 16 B per 2048-element chunk, i.e. <0.01 B per
    element, against the streams the update itself moves per element:
        adam_ (read p, g, m, v; write p, m, v):   28 B fp32 params, 22 B bf16/fp16.
        sgd_ with momentum (p, g, buf; p, buf):   20 B fp32 params, 14 B bf16/fp16;
             the first step does not read buf (16 B fp32); no momentum: 12 B (6 B bf16).
        schedule_free_adamw_ (y, g, z, v; y, z, v): 28 B fp32, 22 B bf16/fp16 y and g.
    These are the minimums of perf_anchors.md §1.2; torch's foreach AdamW moves ~80 B.

Scalars:
    Step-varying scalars that a schedule changes (lr; for Schedule-Free also ckp1 and the
    y step) are read by the kernel from a small fp32 device tensor, so a new value never
    recompiles and a CUDA graph could capture the launch. Pass them as 0-d/1-element
    tensors on the params' device to avoid a host-to-device copy per call; Python floats
    are copied (pinned, non-blocking, cached per value). Bias corrections are computed on
    the host from the int step; they and the other hyperparameters are fp32 kernel
    arguments (Triton does not specialise on float values). ``1 - beta`` is computed on
    the host in float64, as torch.optim does. 0-d tensors are accepted there too but are
    read with ``float()``, which synchronises if they live on the GPU.
    CUDA graphs: a cache miss (new tensors, a new float lr) copies tables from the host,
    so make one eager call with the same tensors before capturing, and pass the
    step-varying scalars as device tensors updated in place.

Math: loads are widened to fp32, all arithmetic is fp32 with correctly rounded division
and square root (``div_rn``, ``sqrt_rn``), params are rounded back to their dtype (round to
nearest even) on store; state is fp32. (Triton's interpreter truncates fp32 -> bf16, so
interpreted kernels round bf16 with integer ops: ``SOFT_BF16`` in ``_kernels``.)

Scope and fallbacks:
    * CUDA tensors: compiled Triton kernels (needs ``triton``; see ``available()``).
    * CPU tensors with ``TRITON_INTERPRET=1``: the same kernels in Triton's interpreter
      (numpy, slow, numerically faithful); this is how CI tests them.
    * CPU tensors otherwise: RuntimeError. Falling back is the caller's job
      (``kernels.fused_optim`` routes CPU tensors to its C++/PyTorch paths).
    Params: fp32, bf16 or fp16 (mixed dtypes in one list are fine: one launch per dtype).
    Grads: the params' dtype. State: fp32. Every tensor of one index must have the same
    shape and strides and be dense (contiguous in some dimension order, e.g. channels_last).
    The writes go through raw pointers and do not bump autograd version counters.

Importing this module imports neither triton nor touches CUDA or the environment: triton
is imported, and the kernels are defined, on the first call.
"""

import collections
import contextlib
import functools
from collections.abc import Sequence

import torch

__all__ = ['adam_', 'available', 'schedule_free_adamw_', 'sgd_']

_BLOCK = 2048  # elements per program: 16 per thread at 4 warps = four 16-byte fp32 vectors
_NUM_WARPS = 4
_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_PLAN_CACHE_SIZE = 64
_SCALAR_CACHE_SIZE = 64
_ALIGN_BYTES = 16

Scalar = float | torch.Tensor

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


# ----------------------------------------------------------------------------- host side


class _LRU(collections.OrderedDict):
    """A small least-recently-used dict: ``get`` refreshes, ``put`` evicts the oldest."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key):
        value = super().get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key, value):
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


_PLANS = _LRU(_PLAN_CACHE_SIZE)
_SCALARS = _LRU(_SCALAR_CACHE_SIZE)


class _Group:
    """One launch: the tensors of one param dtype and their device tables."""

    __slots__ = ('aligned', 'dtype', 'n_chunks', 'tables')

    def __init__(self, dtype, tables, n_chunks, aligned):
        self.dtype = dtype
        self.tables = tables  # (ptr row per list..., numels, chunk_tensors, chunk_blocks)
        self.n_chunks = n_chunks
        self.aligned = aligned


def _is_dense(t: torch.Tensor) -> bool:
    """Whether ``t`` covers a gap-free, non-overlapping block of memory (any dim order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda s: s[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _validate(op: str, names: Sequence[str], lists: Sequence[list], n_param_like: int) -> None:
    """Full checks, run when a plan is built. The first ``n_param_like`` lists take the
    params' dtype; the rest are fp32 state."""
    params = lists[0]
    device = params[0].device
    for name, lst in zip(names, lists):
        if len(lst) != len(params):
            raise ValueError(f'{op}: {name} has {len(lst)} tensors; params has {len(params)}')
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or p.dtype not in _PARAM_DTYPES:
            kind = p.dtype if isinstance(p, torch.Tensor) else type(p).__name__
            raise TypeError(f'{op}: params[{i}] is {kind}; expected float32/bfloat16/float16')
        for j, (name, lst) in enumerate(zip(names, lists)):
            t = lst[i]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f'{op}: {name}[{i}] is a {type(t).__name__}, not a Tensor')
            want = p.dtype if j < n_param_like else torch.float32
            if t.dtype != want:
                raise TypeError(f'{op}: {name}[{i}] is {t.dtype}; expected {want}')
            if t.device != device:
                raise ValueError(f'{op}: {name}[{i}] is on {t.device}; params[0] is on {device}')
            if t.layout != torch.strided or not _is_dense(t):
                raise ValueError(f'{op}: {name}[{i}] is not a dense strided tensor')
            if t.shape != p.shape or (t.numel() > 1 and t.stride() != p.stride()):
                raise ValueError(
                    f'{op}: {name}[{i}] has shape {tuple(t.shape)} and strides {t.stride()}; '
                    f'params[{i}] has {tuple(p.shape)} and {p.stride()}'
                )


def _to_device_int64(rows: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """Packs int rows into one int64 tensor on ``device`` (one copy) and returns row views.

    Every row starts on a 16-byte boundary so that Triton, which specialises pointer
    arguments on 16-byte alignment, compiles one variant whatever the list lengths.
    """
    padded = [(len(r) + 1) // 2 * 2 for r in rows]
    host = torch.zeros(sum(padded), dtype=torch.int64, pin_memory=device.type == 'cuda')
    offset = 0
    for row, width in zip(rows, padded):
        host[offset : offset + len(row)] = torch.tensor(row, dtype=torch.int64)
        offset += width
    # Pinned + non_blocking: no host sync; the caching host allocator keeps the buffer
    # alive until the copy has run.
    packed = host.to(device, non_blocking=True)
    views, offset = [], 0
    for row, width in zip(rows, padded):
        views.append(packed[offset : offset + len(row)])
        offset += width
    return views


def _build_plan(lists: Sequence[list]) -> list[_Group]:
    params = lists[0]
    device = params[0].device
    # One launch per (dtype, alignment): a tensor whose addresses are not all 16-byte
    # aligned (a view at an odd offset, e.g. into a flat gradient bucket) goes to a
    # second, scalar-access launch instead of taking vector accesses away from the rest.
    by_group: dict[tuple[torch.dtype, bool], list[int]] = {}
    for i, p in enumerate(params):
        if p.numel() == 0:
            continue
        aligned = all(lst[i].data_ptr() % _ALIGN_BYTES == 0 for lst in lists)
        by_group.setdefault((p.dtype, aligned), []).append(i)
    groups = []
    for (dtype, aligned), idx in by_group.items():
        ptr_rows = [[lst[i].data_ptr() for i in idx] for lst in lists]
        numels = [params[i].numel() for i in idx]
        chunk_tensors, chunk_blocks = [], []
        for k, n in enumerate(numels):
            blocks = -(-n // _BLOCK)
            chunk_tensors += [k] * blocks
            chunk_blocks += range(blocks)
        tables = _to_device_int64([*ptr_rows, numels, chunk_tensors, chunk_blocks], device)
        groups.append(_Group(dtype, tuple(tables), len(chunk_tensors), aligned))
    return groups


def _plan(op: str, names: Sequence[str], lists: Sequence[list], n_param_like: int):
    """Returns the cached launch plan for these lists, building and validating on a miss."""
    params = lists[0]
    try:
        key = (
            op,
            params[0].device,
            tuple(map(len, lists)),
            tuple(t.data_ptr() for lst in lists for t in lst),
            tuple(p.numel() for p in params),
            tuple(t.dtype for lst in lists[:n_param_like] for t in lst),
        )
    except AttributeError:  # a non-tensor entry: let the checks name it
        _validate(op, names, lists, n_param_like)
        raise
    plan = _PLANS.get(key)
    if plan is None:
        _validate(op, names, lists, n_param_like)
        plan = _build_plan(lists)
        _PLANS.put(key, plan)
    return plan


def _host_scalar(x: Scalar) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _device_scalars(values: Sequence[Scalar], device: torch.device) -> torch.Tensor:
    """The step-varying scalars as one fp32 tensor on ``device``, for the kernel to load.

    A single fp32 1-element tensor already on ``device`` is used as is (no copy, graph
    capturable); other tensors are converted on the device; Python floats are copied once
    per distinct value (pinned, non-blocking) and cached.
    """
    if all(not isinstance(v, torch.Tensor) for v in values):
        key = (device, tuple(float(v) for v in values))
        out = _SCALARS.get(key)
        if out is None:
            host = torch.tensor(key[1], dtype=torch.float32, pin_memory=device.type == 'cuda')
            out = host.to(device, non_blocking=True)
            _SCALARS.put(key, out)
        return out
    parts = []
    for v in values:
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise ValueError(f'scalar tensors must have one element; got shape {v.shape}')
            parts.append(v.detach().reshape(1).to(device=device, dtype=torch.float32))
        else:
            parts.append(torch.full((1,), float(v), dtype=torch.float32, device=device))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _check_device(op: str, device: torch.device) -> bool:
    """Raises unless the kernels can run on ``device``; returns the interpreter mode."""
    if not _triton_importable():
        raise RuntimeError(f'{op}: triton is not installed; use kernels.fused_optim instead')
    interpret = _interpret()
    if device.type == 'cpu' and not interpret:
        raise RuntimeError(
            f'{op}: got CPU tensors; the Triton kernels need CUDA tensors, or '
            'TRITON_INTERPRET=1 to run them in the (slow) Triton interpreter. '
            'kernels.fused_optim has the CPU paths.'
        )
    if device.type not in ('cuda', 'cpu'):
        raise RuntimeError(f'{op}: tensors on {device}; the Triton kernels need CUDA tensors')
    return interpret


def _launch(op: str, kernel_name: str, names, lists, n_param_like, hyper, args, constexprs):
    """Validates/plans, then launches ``kernel_name`` once per (dtype, alignment) group."""
    params = lists[0]
    if not params:
        return
    if not isinstance(params[0], torch.Tensor):
        raise TypeError(f'{op}: params[0] is a {type(params[0]).__name__}, not a Tensor')
    device = params[0].device
    interpret = _check_device(op, device)
    plan = _plan(op, names, lists, n_param_like)
    if not plan:
        return
    kernels = _kernels(interpret)
    kernel = kernels[kernel_name]
    hyper_t = _device_scalars(hyper, device)
    with torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext():
        for group in plan:
            kernel[(group.n_chunks,)](
                *group.tables,
                hyper_t,
                *args,
                PARAM_DTYPE=kernels['dtypes'][group.dtype],
                ALIGNED=group.aligned,
                SOFT_BF16=interpret and group.dtype == torch.bfloat16,
                BLOCK=_BLOCK,
                num_warps=_NUM_WARPS,
                **constexprs,
            )


# ----------------------------------------------------------------------------- public API


@torch.no_grad()
def adam_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    step: int,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    nesterov: bool = False,
) -> None:
    """One AdamW (or NAdamW) step over whole tensor lists, in place, one launch per dtype.

    Per element, in fp32 (``bc1 = 1 - beta1**step``, ``bc2 = 1 - beta2**step``)::

        p *= 1 - lr * weight_decay
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = (beta1 * m + (1 - beta1) * g if nesterov else m) / bc1
        p -= lr * m_hat / (sqrt(v / bc2) + eps)

    Args:
        params: fp32, bf16 or fp16 tensors, updated in place (rounded to their dtype).
        grads: Same dtypes, shapes and strides as ``params``; read only.
        exp_avgs: fp32 first moments ``m``, updated in place.
        exp_avg_sqs: fp32 second moments ``v``, updated in place.
        step: The 1-based step number, for the bias corrections: an int (corrections
            computed on the host) or a 1-element tensor on the params' device (capturable:
            corrections computed there, no host sync, so a CUDA graph can replay the step
            while the tensor is incremented in place).
        lr: Learning rate; a float or a 1-element tensor (read on the device, no sync).
        beta1: First-moment decay.
        beta2: Second-moment decay.
        eps: Added to the denominator.
        weight_decay: Decoupled weight decay (scaled by lr).
        nesterov: Nesterov look-ahead on the first moment (AlgoPerf's NAdamW). Defaults
            to False.

    Raises:
        RuntimeError: CPU tensors without ``TRITON_INTERPRET=1``, or no triton.
        TypeError, ValueError: Mismatched lists, dtypes, devices, shapes or strides.
    """
    b1, b2 = _host_scalar(beta1), _host_scalar(beta2)
    if isinstance(step, torch.Tensor):
        # Capturable: 1 - beta**step on the device, in float64 (in fp32, 1 - 0.999**1 loses
        # 4 digits to cancellation), rounded to fp32 once, as the host path rounds its double.
        if step.numel() != 1:
            raise ValueError(
                f'adam_: a step tensor must have one element; got shape {tuple(step.shape)}'
            )
        t = (
            step.detach()
            .reshape(1)
            .to(device=params[0].device if params else step.device, dtype=torch.float64)
        )
        bias = [1 - torch.pow(b1, t), 1 - torch.pow(b2, t)]
        hyper, bc1, bc2, device_bias = (lr, *bias), 1.0, 1.0, True
    else:
        step = int(step)
        if step < 1:
            raise ValueError(f'adam_: step must be >= 1; got {step}')
        hyper, bc1, bc2, device_bias = (lr,), 1.0 - b1**step, 1.0 - b2**step, False
    args = (b1, 1.0 - b1, b2, 1.0 - b2, _host_scalar(eps), _host_scalar(weight_decay), bc1, bc2)
    _launch(
        'adam_', 'adam', ('params', 'grads', 'exp_avgs', 'exp_avg_sqs'),
        (params, grads, exp_avgs, exp_avg_sqs), 2, hyper, args,
        {'NESTEROV': bool(nesterov), 'DEVICE_BIAS': device_bias},
    )  # fmt: skip


@torch.no_grad()
def sgd_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    *,
    lr: Scalar,
    momentum: Scalar,
    dampening: Scalar,
    weight_decay: Scalar,
    nesterov: bool,
    first_step: bool,
) -> None:
    """One ``torch.optim.SGD`` step over whole tensor lists, in place, one launch per dtype.

    Per element, in fp32::

        g = g + weight_decay * p
        if momentum != 0:
            buf = g if first_step else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g

    Args:
        params: fp32, bf16 or fp16 tensors, updated in place (rounded to their dtype).
        grads: Same dtypes, shapes and strides as ``params``; read only.
        momentum_buffers: fp32 buffers, updated in place (written, not read, on the first
            step). Must be empty when ``momentum == 0``.
        lr: Learning rate; a float or a 1-element tensor (read on the device, no sync).
        momentum: Momentum factor; 0 disables the buffers.
        dampening: Dampening of the gradient in the buffer update (not on the first step).
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum.
        first_step: Whether the buffers are being initialised (torch: buffer is None).

    Raises:
        RuntimeError: CPU tensors without ``TRITON_INTERPRET=1``, or no triton.
        TypeError, ValueError: Mismatched lists, dtypes, devices, shapes or strides.
    """
    mom = _host_scalar(momentum)
    has_momentum = mom != 0.0
    if not has_momentum and len(momentum_buffers):
        raise ValueError('sgd_: momentum_buffers must be empty when momentum == 0')
    if has_momentum:
        names = ('params', 'grads', 'momentum_buffers')
        lists = (params, grads, momentum_buffers)
    else:  # the kernel still takes a buffer table: the params' stands in, never touched
        names, lists = ('params', 'grads', 'params'), (params, grads, params)
    args = (mom, 1.0 - _host_scalar(dampening), _host_scalar(weight_decay))
    constexprs = {
        'HAS_MOMENTUM': has_momentum,
        'FIRST_STEP': bool(first_step) and has_momentum,
        'NESTEROV': bool(nesterov) and has_momentum,
    }
    n_param_like = 2 if has_momentum else 3
    _launch('sgd_', 'sgd', names, lists, n_param_like, (lr,), args, constexprs)


@torch.no_grad()
def schedule_free_adamw_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    zs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: Scalar,
    ckp1: Scalar,
    adaptive_y_lr: Scalar,
    beta2: Scalar,
    bias_correction2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
) -> None:
    """The inner loop of ``schedulefree.AdamWScheduleFree.step`` (v1.4.1), in place.

    ``params`` hold y. Per element, in fp32, in the upstream order::

        v = beta2 * v + (1 - beta2) * g * g
        d = g / (sqrt(v / bias_correction2) + eps)
        d += weight_decay * y                   # decay at the old y
        y += ckp1 * (z - y)                     # upstream: torch.lerp(y, z, ckp1)
        y += adaptive_y_lr * d                  # adaptive_y_lr = lr * (beta1 * (1 - ckp1) - 1)
        z -= lr * d

    As in ``kernels.fused_optim.schedule_free_adamw_reference``, the lerp is the one-sided
    formula; torch's lerp switches to ``z - (z - y) * (1 - ckp1)`` for ``ckp1 >= 0.5``,
    which differs in the last ulp. Unlike upstream the gradient is not overwritten.

    Args:
        params: y, fp32, bf16 or fp16, updated in place (rounded to their dtype).
        grads: Same dtypes, shapes and strides as ``params``; read only.
        zs: fp32 z sequences, updated in place.
        exp_avg_sqs: fp32 second moments, updated in place.
        lr: Scheduled learning rate (after warmup); float or 1-element tensor.
        ckp1: Averaging weight ``weight / weight_sum``; float or 1-element tensor.
        adaptive_y_lr: ``lr * (beta1 * (1 - ckp1) - 1)``; float or 1-element tensor.
        beta2: Second-moment decay.
        bias_correction2: ``1 - beta2 ** (k + 1)``.
        eps: Added to the denominator.
        weight_decay: Weight decay, applied through ``d`` at y.

    Raises:
        RuntimeError: CPU tensors without ``TRITON_INTERPRET=1``, or no triton.
        TypeError, ValueError: Mismatched lists, dtypes, devices, shapes or strides.
    """
    b2 = _host_scalar(beta2)
    args = (
        b2, 1.0 - b2, _host_scalar(bias_correction2), _host_scalar(eps),
        _host_scalar(weight_decay),
    )  # fmt: skip
    _launch(
        'schedule_free_adamw_', 'schedule_free_adamw', ('params', 'grads', 'zs', 'exp_avg_sqs'),
        (params, grads, zs, exp_avg_sqs), 2, (lr, ckp1, adaptive_y_lr), args, {},
    )  # fmt: skip
