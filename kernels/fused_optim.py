"""Fused optimizer updates over lists of tensors: AdamW/NAdamW, SGD, Schedule-Free AdamW.

Each op updates params and optimizer state in place for a whole parameter list, in one
pass over memory where a fused path exists. Params are fp32, bf16 or fp16, grads have the
param's dtype, optimizer state is always fp32, and all math is fp32: a 16-bit param is
widened, updated and rounded back to its dtype once per step. Grads are only read. (fp64
params, with fp64 grads and state, are accepted too and take the reference, in fp64.)

Minimum bytes moved per fp32 parameter (read p, g and each state; write p and each state):
AdamW/NAdamW 28, Schedule-Free AdamW 28, SGD with momentum 20 (16 on the first step, 12
without momentum). torch's foreach AdamW moves ~80 and upstream's NAdamW loop ~128.

Each op's ``*_reference`` twin is the spec: the formula in paper notation, one tensor at a
time, each line a plain torch op. Scalars (``lr``, betas, ...) may be Python floats or 0-d
tensors; they are read with ``float()`` wherever a Python number is needed, which is free
for CPU tensors (a device sync for CUDA ones, on the reference path only).

Scope and fallbacks (decided per call by ``_path``):
    * CPU tensors, all contiguous, params fp32/bf16/fp16 with grads of the same dtype and
      fp32 state, ``kernels._C`` built: the C++ kernels of csrc/fused_optim.cpp (all
      chunks of all tensors under one ``at::parallel_for``). They compute the reference's
      fp32 ops in the reference's order, so on x86-64 they agree with it bit for bit.
    * CUDA tensors: the function of the same name in ``kernels.triton_optim``, if that
      module imports; else the reference, with one warning per process.
    * Anything else (non-contiguous or other-dtype CPU tensors, other devices, no
      extension): the reference, with one warning per process if the extension is
      missing for CPU inputs.
    * Under ``torch.compile``: each public op is a ``torch.library`` custom op
      (``algoperf::fused_adam``, ``fused_sgd``, ``fused_schedule_free_adamw``; mutating,
      with fake implementations), so the compiled graph holds one opaque node that runs
      the dispatch above at run time, and the fused kernel stays in the compiled step.
"""

import functools
import importlib
import types
import warnings
from collections.abc import Sequence

import torch

from kernels import _ext

Tensors = Sequence[torch.Tensor]
Scalar = float | torch.Tensor

# Param dtypes the C++ kernels take (grads must match; state is fp32).
_EXT_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_EXT, _TRITON, _REFERENCE = 'ext', 'triton', 'reference'

# The references' one op that is not correctly rounded everywhere: torch's CPU sqrt (via
# MKL or Sleef) is one ulp off in ~20% of fp32 results (measured, torch 2.13), where the
# C++ kernels use the IEEE instruction. That ulp is the only difference between the two,
# so the tests swap in an IEEE sqrt here to check the C++ path bit for bit, and compare
# against the reference as written with tests/tolerances.py 'fused_optim'.
_sqrt = torch.sqrt


def _opmath(t: torch.Tensor) -> torch.Tensor:
    """The tensor in its math dtype: fp32, or fp64 for fp64 tensors (reference path only)."""
    return t if t.dtype == torch.float64 else t.float()


def _check_lengths(op: str, params: Tensors, **lists: Tensors) -> None:
    """Raises ValueError unless every list has one tensor per param (zip would truncate)."""
    for name, tensors in lists.items():
        if len(tensors) != len(params):
            raise ValueError(
                f'{op}: {name} has {len(tensors)} tensors; expected {len(params)} (one per param)'
            )


def _check_step(op: str, step: int | torch.Tensor) -> None:
    """Raises unless step >= 1. A CUDA step tensor (the capturable path) is not read: that
    would synchronise, and the Triton kernel computes its bias corrections on the device."""
    if isinstance(step, torch.Tensor):
        if step.numel() != 1:
            raise ValueError(
                f'{op}: a step tensor must have one element; got shape {tuple(step.shape)}'
            )
        if step.is_cuda:
            return
        step = float(step)
    if step < 1:
        raise ValueError(f'{op}: step is {step}; expected >= 1')


# --------------------------------------------------------------------------------------
# References: the spec, in paper notation. ``theta`` is the param in fp32.


def adam_reference(
    params: Tensors,
    grads: Tensors,
    exp_avgs: Tensors,
    exp_avg_sqs: Tensors,
    *,
    step: int,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    nesterov: bool = False,
) -> None:
    """One AdamW step (NAdamW if ``nesterov``), in place, in plain PyTorch.

    For each param theta with grad g, first moment m and second moment v, at step t:

        theta <- theta * (1 - lr * wd)
        m     <- b1 * m + (1 - b1) * g
        v     <- b2 * v + (1 - b2) * g^2
        m_hat <- (b1 * m + (1 - b1) * g if nesterov else m) / (1 - b1^t)
        v_hat <- v / (1 - b2^t)
        theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

    ``nesterov=False`` is ``torch.optim.AdamW``; ``nesterov=True`` is AlgoPerf's NAdamW
    baseline (``submissions.optimizers.nadamw.nadamw_reference``).

    Args:
        params: Params (fp32, bf16 or fp16), updated in place.
        grads: Grads, one per param, of the param's dtype and shape; not modified.
        exp_avgs: First moments m, fp32, updated in place.
        exp_avg_sqs: Second moments v, fp32, updated in place.
        step: The step count t >= 1 of this update (bias corrections).
        lr: Learning rate.
        beta1: First-moment decay b1.
        beta2: Second-moment decay b2.
        eps: Added to the denominator.
        weight_decay: Decoupled weight decay wd (multiplied by lr).
        nesterov: Whether to use the Nesterov look-ahead of NAdamW. Defaults to False.

    Raises:
        ValueError: The lists differ in length, or ``step < 1``.
    """
    _check_lengths('adam_', params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs)
    _check_step('adam_', step)
    step = int(step)  # a step tensor is read here (a device sync for a CUDA one)
    lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
    eps, weight_decay = float(eps), float(weight_decay)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    with torch.no_grad():
        for p, grad, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            theta, g = _opmath(p), _opmath(grad)
            theta = theta * (1 - lr * weight_decay)
            m.copy_(beta1 * m + (1 - beta1) * g)
            v.copy_(beta2 * v + (1 - beta2) * (g * g))
            m_hat = (beta1 * m + (1 - beta1) * g if nesterov else m) / bias_correction1
            v_hat = v / bias_correction2
            theta = theta - lr * m_hat / (_sqrt(v_hat) + eps)
            p.copy_(theta)


def sgd_reference(
    params: Tensors,
    grads: Tensors,
    momentum_buffers: Tensors,
    *,
    lr: Scalar,
    momentum: Scalar,
    dampening: Scalar,
    weight_decay: Scalar,
    nesterov: bool,
    first_step: bool,
) -> None:
    """One ``torch.optim.SGD`` step, in place, in plain PyTorch with fp32 buffers.

    For each param theta with grad g and momentum buffer b:

        g     <- g + wd * theta                        (if wd != 0)
        b     <- g if first_step else mu * b + (1 - dampening) * g
        g     <- g + mu * b if nesterov else b         (both only if mu != 0)
        theta <- theta - lr * g

    Args:
        params: Params (fp32, bf16 or fp16), updated in place.
        grads: Grads, one per param, of the param's dtype and shape; not modified.
        momentum_buffers: fp32 buffers b, updated in place; empty when ``momentum == 0``.
        lr: Learning rate.
        momentum: Momentum factor mu.
        dampening: Dampening of the gradient in the momentum update.
        weight_decay: L2 penalty wd, added to the gradient.
        nesterov: Whether to use Nesterov momentum.
        first_step: Whether the buffers are uninitialised (torch's ``buf is None``): they
            are set to the gradient, ignoring dampening.

    Raises:
        ValueError: ``momentum_buffers`` is not one per param (momentum != 0) or not
            empty (momentum == 0).
    """
    lr, momentum = float(lr), float(momentum)
    dampening, weight_decay = float(dampening), float(weight_decay)
    _check_momentum_buffers(params, momentum_buffers, momentum)
    _check_lengths('sgd_', params, grads=grads)
    with torch.no_grad():
        for i, (p, grad) in enumerate(zip(params, grads)):
            theta, g = _opmath(p), _opmath(grad)
            if weight_decay != 0:
                g = g + weight_decay * theta
            if momentum != 0:
                b = momentum_buffers[i]
                b.copy_(g if first_step else momentum * b + (1 - dampening) * g)
                g = g + momentum * b if nesterov else b
            p.copy_(theta - lr * g)


def _check_momentum_buffers(params: Tensors, momentum_buffers: Tensors, momentum: float) -> None:
    if momentum != 0:
        _check_lengths('sgd_', params, momentum_buffers=momentum_buffers)
    elif len(momentum_buffers):
        raise ValueError(
            f'sgd_: momentum is 0 but {len(momentum_buffers)} momentum_buffers were given; '
            'expected none'
        )


def schedule_free_adamw_reference(
    params: Tensors,
    grads: Tensors,
    zs: Tensors,
    exp_avg_sqs: Tensors,
    *,
    lr: Scalar,
    ckp1: Scalar,
    adaptive_y_lr: Scalar,
    beta2: Scalar,
    bias_correction2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
) -> None:
    """One Schedule-Free AdamW step in train mode (params hold y), in place.

    The inner loop of ``schedulefree.AdamWScheduleFree.step`` (v1.4), in its order of
    operations, for each y with grad g, z and second moment v:

        v <- b2 * v + (1 - b2) * g^2
        d <- g / (sqrt(v / bc2) + eps)
        d <- d + wd * y                                (if wd != 0; decay at y)
        y <- y + ckp1 * (z - y)                        (lerp towards z)
        y <- y + adaptive_y_lr * d
        z <- z - lr * d

    The caller computes the step-dependent scalars exactly as the package does:
    ``lr`` = base lr times the warmup factor, ``ckp1 = weight / weight_sum``,
    ``adaptive_y_lr = lr * (beta1 * (1 - ckp1) - 1)`` and ``bc2 = 1 - beta2**(k + 1)``.
    Unlike the package, ``grads`` are not overwritten with d.

    Args:
        params: y (fp32, bf16 or fp16), updated in place.
        grads: Grads, one per param, of the param's dtype and shape; not modified.
        zs: z sequences, fp32, updated in place.
        exp_avg_sqs: Second moments v, fp32, updated in place.
        lr: The scheduled learning rate of this step.
        ckp1: Averaging weight c_{k+1} of the new z in x.
        adaptive_y_lr: Step size of d in y.
        beta2: Second-moment decay b2.
        bias_correction2: 1 - b2^(k+1).
        eps: Added to the denominator.
        weight_decay: Weight decay wd, evaluated at y.

    Raises:
        ValueError: The lists differ in length.
    """
    _check_lengths('schedule_free_adamw_', params, grads=grads, zs=zs, exp_avg_sqs=exp_avg_sqs)
    lr, ckp1, adaptive_y_lr = float(lr), float(ckp1), float(adaptive_y_lr)
    beta2, bias_correction2 = float(beta2), float(bias_correction2)
    eps, weight_decay = float(eps), float(weight_decay)
    with torch.no_grad():
        for p, grad, z, v in zip(params, grads, zs, exp_avg_sqs):
            y, g = _opmath(p), _opmath(grad)
            v.copy_(beta2 * v + (1 - beta2) * (g * g))
            d = g / (_sqrt(v / bias_correction2) + eps)
            if weight_decay != 0:
                d = d + weight_decay * y
            y = y + ckp1 * (z - y)
            y = y + adaptive_y_lr * d
            z.copy_(z - lr * d)
            p.copy_(y)


# --------------------------------------------------------------------------------------
# Dispatch.


@functools.cache
def _triton_module() -> types.ModuleType | None:
    """``kernels.triton_optim`` if it imports and can run here (once); else None, and warns.

    Imported on the first CUDA call only, so ``import kernels`` never imports it.
    """
    try:
        module = importlib.import_module('kernels.triton_optim')
        if module.available():
            return module
        reason = 'triton is not installed'
    except Exception as error:  # noqa: BLE001 - any failure to load it means "use the reference"
        reason = f'{type(error).__name__}: {error}'
    warnings.warn(
        f'kernels.triton_optim cannot run ({reason}); fused optimizer ops on CUDA fall back '
        'to their PyTorch references.',
        RuntimeWarning,
        stacklevel=4,
    )
    return None


def _ext_eligible(params: Tensors, grads: Tensors, states: Sequence[Tensors]) -> bool:
    """Whether the C++ kernels accept these lists: CPU, contiguous, supported dtypes.

    Every tensor is looked at (~0.3 us per tensor and list: ~0.2 ms for ResNet-50's 161
    params and two states, against a ~10 ms step): a list with one transposed or fp64
    tensor goes to the reference instead of failing in the kernel's TORCH_CHECKs. Shape
    mismatches are not checked here; the kernel raises on them, naming the index.
    """
    for p, g in zip(params, grads):
        if not (
            p.dtype in _EXT_PARAM_DTYPES
            and g.dtype == p.dtype
            and p.is_cpu
            and g.is_cpu
            and p.is_contiguous()
            and g.is_contiguous()
        ):
            return False
    return all(
        s.dtype == torch.float32 and s.is_cpu and s.is_contiguous()
        for tensors in states
        for s in tensors
    )


def _path(op: str, params: Tensors, grads: Tensors, states: Sequence[Tensors]) -> str:
    """Picks the implementation for one call (see the module docstring)."""
    if not params or torch.compiler.is_compiling():
        return _REFERENCE
    first = params[0]
    if first.is_cuda:
        return _TRITON if _triton_module() is not None else _REFERENCE
    if first.is_cpu:
        if _ext.load_ext() is None:
            _ext.warn_ext_fallback(op)
        elif _ext_eligible(params, grads, states):
            return _EXT
    return _REFERENCE


def _adam_eager(
    params: Tensors,
    grads: Tensors,
    exp_avgs: Tensors,
    exp_avg_sqs: Tensors,
    *,
    step: int | torch.Tensor,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    nesterov: bool = False,
) -> None:
    """One fused AdamW step (NAdamW if ``nesterov``), in place; see ``adam_reference``.

    Args and Raises: as ``adam_reference``; ``step`` may also be a 1-element tensor. On
    CUDA that is the capturable form: the Triton kernel derives the bias corrections from
    it on the device, so the call never synchronises and a CUDA graph can replay it. On
    the C++ path the kernel raises TypeError or ValueError, naming the list and index, for
    mismatched shapes or dtypes.
    """
    _check_lengths('adam_', params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs)
    _check_step('adam_', step)
    path = _path('adam_', params, grads, (exp_avgs, exp_avg_sqs))
    if path == _EXT:
        _ext.load_ext().adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            int(step),
            float(lr),
            float(beta1),
            float(beta2),
            float(eps),
            float(weight_decay),
            bool(nesterov),
        )
        return
    impl = _triton_module().adam_ if path == _TRITON else adam_reference
    impl(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        step=step,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )


def _sgd_eager(
    params: Tensors,
    grads: Tensors,
    momentum_buffers: Tensors,
    *,
    lr: Scalar,
    momentum: Scalar,
    dampening: Scalar,
    weight_decay: Scalar,
    nesterov: bool,
    first_step: bool,
) -> None:
    """One fused ``torch.optim.SGD`` step, in place; see ``sgd_reference``.

    Args and Raises: as ``sgd_reference``.
    """
    _check_momentum_buffers(params, momentum_buffers, float(momentum))
    _check_lengths('sgd_', params, grads=grads)
    path = _path('sgd_', params, grads, (momentum_buffers,))
    if path == _EXT:
        _ext.load_ext().sgd_(
            params,
            grads,
            momentum_buffers,
            float(lr),
            float(momentum),
            float(dampening),
            float(weight_decay),
            bool(nesterov),
            bool(first_step),
        )
        return
    impl = _triton_module().sgd_ if path == _TRITON else sgd_reference
    impl(
        params,
        grads,
        momentum_buffers,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        first_step=first_step,
    )


def _schedule_free_adamw_eager(
    params: Tensors,
    grads: Tensors,
    zs: Tensors,
    exp_avg_sqs: Tensors,
    *,
    lr: Scalar,
    ckp1: Scalar,
    adaptive_y_lr: Scalar,
    beta2: Scalar,
    bias_correction2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
) -> None:
    """One fused Schedule-Free AdamW step, in place; see ``schedule_free_adamw_reference``.

    Args and Raises: as ``schedule_free_adamw_reference``.
    """
    _check_lengths('schedule_free_adamw_', params, grads=grads, zs=zs, exp_avg_sqs=exp_avg_sqs)
    path = _path('schedule_free_adamw_', params, grads, (zs, exp_avg_sqs))
    if path == _EXT:
        _ext.load_ext().schedule_free_adamw_(
            params,
            grads,
            zs,
            exp_avg_sqs,
            float(lr),
            float(ckp1),
            float(adaptive_y_lr),
            float(beta2),
            float(bias_correction2),
            float(eps),
            float(weight_decay),
        )
        return
    impl = (
        _triton_module().schedule_free_adamw_ if path == _TRITON else schedule_free_adamw_reference
    )
    impl(
        params,
        grads,
        zs,
        exp_avg_sqs,
        lr=lr,
        ckp1=ckp1,
        adaptive_y_lr=adaptive_y_lr,
        beta2=beta2,
        bias_correction2=bias_correction2,
        eps=eps,
        weight_decay=weight_decay,
    )


# --------------------------------------------------------------------------------------
# torch.library custom ops: what ``torch.compile`` sees.
#
# Traced by dynamo, the public functions below call these ops instead of running the
# dispatch, so a compiled training step keeps the fused kernel (C++ on CPU, Triton on CUDA)
# as one opaque node that mutates its lists, instead of inlining the reference. Eager calls
# go straight to the dispatch (no op-dispatcher overhead, the same errors as before). The
# ops are registered when this module is imported (dynamo cannot trace a registration), in
# the project's ``algoperf`` op namespace. Scalars that may be tensors (the capturable
# step, a device lr) travel in an Optional[Tensor] slot beside their float/int slot.


def _split_scalar(x: Scalar) -> tuple[float, torch.Tensor | None]:
    """(float slot, tensor slot) of a step-varying scalar (lr, ckp1, ...), for tracing.

    Under torch.compile pass step-varying scalars as 0-d tensors (or constants): a Python
    float computed from a dynamic int step (a SymFloat, e.g. ckp1 = 1 / t) is specialised
    when it reaches an op, and dynamo 2.13 can then fail its own guard ("Guard failed on
    the same frame it was created"; seen with Schedule-Free's scalars).
    """
    return (0.0, x) if isinstance(x, torch.Tensor) else (float(x), None)


@torch.library.custom_op(
    'algoperf::fused_adam', mutates_args=('params', 'exp_avgs', 'exp_avg_sqs')
)
def _adam_op(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    step: int,
    step_tensor: torch.Tensor | None,
    lr: float,
    lr_tensor: torch.Tensor | None,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    nesterov: bool,
) -> None:
    _adam_eager(
        params, grads, exp_avgs, exp_avg_sqs,
        step=step if step_tensor is None else step_tensor,
        lr=lr if lr_tensor is None else lr_tensor,
        beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, nesterov=nesterov,
    )  # fmt: skip


@_adam_op.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, step, step_tensor, lr, lr_tensor, *rest):
    return None


@torch.library.custom_op('algoperf::fused_sgd', mutates_args=('params', 'momentum_buffers'))
def _sgd_op(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    lr: float,
    lr_tensor: torch.Tensor | None,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    first_step: bool,
) -> None:
    _sgd_eager(
        params, grads, momentum_buffers, lr=lr if lr_tensor is None else lr_tensor,
        momentum=momentum, dampening=dampening, weight_decay=weight_decay,
        nesterov=nesterov, first_step=first_step,
    )  # fmt: skip


@_sgd_op.register_fake
def _(params, grads, momentum_buffers, *rest):
    return None


@torch.library.custom_op(
    'algoperf::fused_schedule_free_adamw', mutates_args=('params', 'zs', 'exp_avg_sqs')
)
def _schedule_free_adamw_op(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    zs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lr: float,
    lr_tensor: torch.Tensor | None,
    ckp1: float,
    ckp1_tensor: torch.Tensor | None,
    adaptive_y_lr: float,
    adaptive_y_lr_tensor: torch.Tensor | None,
    beta2: float,
    bias_correction2: float,
    bias_correction2_tensor: torch.Tensor | None,
    eps: float,
    weight_decay: float,
) -> None:
    _schedule_free_adamw_eager(
        params, grads, zs, exp_avg_sqs,
        lr=lr if lr_tensor is None else lr_tensor,
        ckp1=ckp1 if ckp1_tensor is None else ckp1_tensor,
        adaptive_y_lr=adaptive_y_lr if adaptive_y_lr_tensor is None else adaptive_y_lr_tensor,
        beta2=beta2,
        bias_correction2=(
            bias_correction2 if bias_correction2_tensor is None else float(bias_correction2_tensor)
        ),
        eps=eps, weight_decay=weight_decay,
    )  # fmt: skip


@_schedule_free_adamw_op.register_fake
def _(params, grads, zs, exp_avg_sqs, *rest):
    return None


# --------------------------------------------------------------------------------------
# Public API.


def adam_(
    params: Tensors,
    grads: Tensors,
    exp_avgs: Tensors,
    exp_avg_sqs: Tensors,
    *,
    step: int | torch.Tensor,
    lr: Scalar,
    beta1: Scalar,
    beta2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
    nesterov: bool = False,
) -> None:
    """One fused AdamW step (NAdamW if ``nesterov``), in place; see ``adam_reference``.

    Args and Raises: as ``adam_reference``; ``step`` may also be a 1-element tensor. On
    CUDA that is the capturable form: the Triton kernel derives the bias corrections from
    it on the device, so the call never synchronises and a CUDA graph can replay it. On
    the C++ path the kernel raises TypeError or ValueError, naming the list and index, for
    mismatched shapes or dtypes. Under ``torch.compile`` this is the custom op
    ``algoperf::fused_adam`` (one node; the same kernels at run time).
    """
    if not torch.compiler.is_compiling():
        _adam_eager(
            params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1, beta2=beta2,
            eps=eps, weight_decay=weight_decay, nesterov=nesterov,
        )  # fmt: skip
        return
    _check_lengths('adam_', params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs)
    step_int, step_tensor = (0, step) if isinstance(step, torch.Tensor) else (int(step), None)
    lr_f, lr_t = _split_scalar(lr)
    _adam_op(
        list(params), list(grads), list(exp_avgs), list(exp_avg_sqs), step_int, step_tensor,
        lr_f, lr_t, float(beta1), float(beta2), float(eps), float(weight_decay), bool(nesterov),
    )  # fmt: skip


def sgd_(
    params: Tensors,
    grads: Tensors,
    momentum_buffers: Tensors,
    *,
    lr: Scalar,
    momentum: Scalar,
    dampening: Scalar,
    weight_decay: Scalar,
    nesterov: bool,
    first_step: bool,
) -> None:
    """One fused ``torch.optim.SGD`` step, in place; see ``sgd_reference``.

    Args and Raises: as ``sgd_reference``. Under ``torch.compile``: the custom op
    ``algoperf::fused_sgd``.
    """
    if not torch.compiler.is_compiling():
        _sgd_eager(
            params, grads, momentum_buffers, lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=nesterov, first_step=first_step,
        )  # fmt: skip
        return
    _check_lengths('sgd_', params, grads=grads)
    lr_f, lr_t = _split_scalar(lr)
    _sgd_op(
        list(params), list(grads), list(momentum_buffers), lr_f, lr_t, float(momentum),
        float(dampening), float(weight_decay), bool(nesterov), bool(first_step),
    )  # fmt: skip


def schedule_free_adamw_(
    params: Tensors,
    grads: Tensors,
    zs: Tensors,
    exp_avg_sqs: Tensors,
    *,
    lr: Scalar,
    ckp1: Scalar,
    adaptive_y_lr: Scalar,
    beta2: Scalar,
    bias_correction2: Scalar,
    eps: Scalar,
    weight_decay: Scalar,
) -> None:
    """One fused Schedule-Free AdamW step, in place; see ``schedule_free_adamw_reference``.

    Args and Raises: as ``schedule_free_adamw_reference``. Under ``torch.compile``: the
    custom op ``algoperf::fused_schedule_free_adamw``.
    """
    if not torch.compiler.is_compiling():
        _schedule_free_adamw_eager(
            params, grads, zs, exp_avg_sqs, lr=lr, ckp1=ckp1, adaptive_y_lr=adaptive_y_lr,
            beta2=beta2, bias_correction2=bias_correction2, eps=eps, weight_decay=weight_decay,
        )  # fmt: skip
        return
    _check_lengths('schedule_free_adamw_', params, grads=grads, zs=zs, exp_avg_sqs=exp_avg_sqs)
    lr_f, lr_t = _split_scalar(lr)
    ckp1_f, ckp1_t = _split_scalar(ckp1)
    ylr_f, ylr_t = _split_scalar(adaptive_y_lr)
    bc2_f, bc2_t = _split_scalar(bias_correction2)
    _schedule_free_adamw_op(
        list(params), list(grads), list(zs), list(exp_avg_sqs), lr_f, lr_t, ckp1_f, ckp1_t,
        ylr_f, ylr_t, float(beta2), bc2_f, bc2_t, float(eps), float(weight_decay),
    )  # fmt: skip
