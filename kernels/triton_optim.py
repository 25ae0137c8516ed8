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
is imported, and the kernels are defined, on the first call. Layout: the ``@triton.jit``
kernels are in ``kernels/_triton_optim_kernels.py``, the launch plans (address tables,
validation, caches) in ``kernels/_multi_tensor_plan.py``; this module launches them.
"""

import contextlib

import torch

from kernels._multi_tensor_plan import (  # noqa: F401  (_BLOCK, _PLANS: used by the tests)
    _BLOCK,
    _PLANS,
    Scalar,
    _device_scalars,
    _host_scalar,
    _plan,
)
from kernels._triton_optim_kernels import (
    _interpret,
    _kernels,
    _triton_importable,
    aot_configs,
    available,
)

__all__ = ['AOT_CONFIGS', 'adam_', 'available', 'schedule_free_adamw_', 'sgd_']

# Every compiled launch variant, for tests/kernels/test_triton_aot_sm90.py; a callable, so
# importing this module imports no triton.
AOT_CONFIGS = aot_configs

_NUM_WARPS = 4


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
