"""Trajectory tests for kernels.fused_optim: the fast paths, the references, and the
optimizers the references reduce to.

Every trajectory is 100 steps with fresh random gradients each step; parameters AND state
are compared at the end. Layers of checks:

    * C++ path vs reference (``ext``): bit for bit against the reference with an IEEE
      sqrt swapped in (``fused_optim._sqrt``; torch's CPU sqrt is one ulp off in ~20% of
      fp32 results), which pins the kernels' op order, scalar rounding and 16-bit
      rounding; and within tolerances.py 'fused_optim' of the reference as written.
    * References vs the optimizers they reduce to: torch.optim.AdamW, upstream NAdamW
      arithmetic (``nadamw_reference``), torch.optim.SGD, schedulefree.AdamWScheduleFree.
    * Dispatch: fallbacks (non-contiguous, other dtypes, no extension, CUDA without
      triton), errors naming the index, version counters, 0-d tensor scalars.
"""

import dataclasses
import importlib
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from tolerances import tolerance

import kernels
from kernels import _ext
from kernels.fused_optim import (
    adam_,
    adam_reference,
    schedule_free_adamw_,
    schedule_free_adamw_reference,
    sgd_,
    sgd_reference,
)
from submissions.optimizers.nadamw import nadamw_reference

# `kernels.fused_optim` is not shadowed by a function, but fetch the module explicitly
# (as test_multi_tensor_l2norm does) since the tests patch its `_sqrt`.
fused_optim_module = importlib.import_module('kernels.fused_optim')
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS = 100
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# Neither x86-64 clone of csrc/fused_optim.cpp can contract into FMAs; elsewhere (GCC on
# aarch64 contracts by default) bitwise agreement is not promised, the tolerances hold.
BITWISE = platform.machine().lower() in ('x86_64', 'amd64')


def _many_small_shapes(n: int = 64) -> list[tuple[int, ...]]:
    gen = torch.Generator().manual_seed(1)
    return [(int(k),) for k in torch.randint(1, 701, (n,), generator=gen)]


CASES = {
    'one': [(1,)],
    'apex_278011': [(278011,)],  # apex's odd size: chunk and vector tails everywhere
    'empty': [(0,)],
    'weird': [(6, 42, 123)],
    'many_small': _many_small_shapes(),  # per-tensor bookkeeping, 1..700-element tails
}


# --------------------------------------------------------------------------------------
# Op variants: hyperparameters, state initialisation and per-step keyword arguments.


def schedule_free_scalars(
    steps: int, *, lr, beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power
) -> list[dict]:
    """Per-step scalars of ``schedulefree.AdamWScheduleFree.step`` (v1.4.1), as it forms them.

    Args:
        steps: How many steps.
        lr, beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power: The
            package's constructor arguments (``betas=(beta1, beta2)``).

    Returns:
        One dict of ``schedule_free_adamw_`` keyword arguments per step.
    """
    out, weight_sum, lr_max = [], 0.0, -1.0
    for k in range(steps):
        sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
        scheduled_lr = lr * sched
        lr_max = max(scheduled_lr, lr_max)
        weight = ((k + 1) ** r) * (lr_max**weight_lr_power)
        weight_sum += weight
        ckp1 = weight / weight_sum if weight_sum else 0.0
        out.append(
            {
                'lr': scheduled_lr,
                'ckp1': ckp1,
                'adaptive_y_lr': scheduled_lr * (beta1 * (1 - ckp1) - 1),
                'beta2': beta2,
                'bias_correction2': 1 - beta2 ** (k + 1),
                'eps': eps,
                'weight_decay': weight_decay,
            }
        )
    return out


@dataclasses.dataclass(frozen=True)
class Variant:
    """One op with one set of hyperparameters."""

    op: Callable
    reference: Callable
    n_states: int
    step_kwargs: Callable[[int], list[dict]]  # steps -> kwargs of each step
    z_state: bool = False  # state 0 starts as a copy of the params (Schedule-Free z)
    stateless: bool = False  # the state lists are empty (SGD without momentum)

    def init_states(self, params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        if self.stateless:
            return [[] for _ in range(self.n_states)]
        states = [[torch.zeros(p.shape) for p in params] for _ in range(self.n_states)]
        if self.z_state:
            states[0] = [p.to(torch.float32, copy=True) for p in params]
        return states


ADAM_HP = {'lr': 1e-2, 'beta1': 0.9, 'beta2': 0.999, 'eps': 1e-8, 'weight_decay': 0.1}
SF_HP = {
    'lr': 1e-2,
    'beta1': 0.9,
    'beta2': 0.999,
    'eps': 1e-8,
    'warmup_steps': 10,
    'r': 0.75,
    'weight_lr_power': 2,
}


def _adam(nesterov):
    return Variant(
        adam_,
        adam_reference,
        2,
        lambda steps: [dict(step=k + 1, nesterov=nesterov, **ADAM_HP) for k in range(steps)],
    )


def _sgd(momentum, dampening, weight_decay, nesterov):
    hp = {'lr': 0.02, 'momentum': momentum, 'dampening': dampening, 'weight_decay': weight_decay}
    return Variant(
        sgd_,
        sgd_reference,
        1,
        lambda steps: [dict(nesterov=nesterov, first_step=k == 0, **hp) for k in range(steps)],
        stateless=not momentum,
    )


def _schedule_free(weight_decay):
    return Variant(
        schedule_free_adamw_,
        schedule_free_adamw_reference,
        2,
        lambda steps: schedule_free_scalars(steps, weight_decay=weight_decay, **SF_HP),
        z_state=True,
    )


VARIANTS = {
    'adamw': _adam(nesterov=False),
    'nadamw': _adam(nesterov=True),
    'sgd_plain_wd': _sgd(momentum=0.0, dampening=0.0, weight_decay=1e-2, nesterov=False),
    'sgd_momentum': _sgd(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    'sgd_nesterov_wd': _sgd(momentum=0.9, dampening=0.0, weight_decay=1e-2, nesterov=True),
    'sgd_dampening_wd': _sgd(momentum=0.9, dampening=0.1, weight_decay=5e-3, nesterov=False),
    'schedule_free': _schedule_free(weight_decay=0.0),
    'schedule_free_wd': _schedule_free(weight_decay=0.05),
}
SQRT_FREE = {name for name in VARIANTS if name.startswith('sgd')}


# --------------------------------------------------------------------------------------
# Trajectories.


def _ieee_sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded fp32 sqrt (numpy's is the sqrtps instruction)."""
    return torch.from_numpy(np.asarray(np.sqrt(x.numpy())))


def with_ieee_sqrt(reference: Callable) -> Callable:
    """``reference`` with fused_optim's ``_sqrt`` swapped for an IEEE sqrt during the call."""

    def run(*args, **kwargs):
        saved = fused_optim_module._sqrt
        fused_optim_module._sqrt = _ieee_sqrt
        try:
            reference(*args, **kwargs)
        finally:
            fused_optim_module._sqrt = saved

    return run


@dataclasses.dataclass
class Run:
    params: list[torch.Tensor]
    states: list[list[torch.Tensor]]


class GradSource:
    """Fresh gradients every step, cheaply: windows into one pre-drawn pool.

    Step k reads the pool from offset 97 k, so every element sees a new value each step;
    magnitudes vary per element over 1e-2..1 (squares stay in fp16's normal range).
    Drawing 278011 normals per step would cost as much as the reference update itself.
    """

    def __init__(self, shapes, dtype, steps: int, gen: torch.Generator):
        self.shapes = shapes
        self.numels = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        total = sum(self.numels) + 97 * steps
        scale = 10.0 ** (-2 * torch.rand(total, generator=gen))
        self.pool = (torch.randn(total, generator=gen) * scale).to(dtype)

    def step(self, k: int) -> list[torch.Tensor]:
        flat = self.pool[97 * k : 97 * k + sum(self.numels)]
        return [c.view(s) for c, s in zip(flat.split(self.numels), self.shapes)]


def trajectories(
    variant: Variant, shapes, dtype, impls: dict[str, Callable], steps: int = STEPS, seed: int = 0
) -> dict[str, Run]:
    """Runs every implementation in lockstep from the same start on the same gradients."""
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    source = GradSource(shapes, dtype, steps, gen)
    runs = {}
    for name in impls:
        params = [p.clone() for p in init]
        runs[name] = Run(params, variant.init_states(params))
    for k, kwargs in enumerate(variant.step_kwargs(steps)):
        grads = source.step(k)
        for name, impl in impls.items():
            impl(runs[name].params, grads, *runs[name].states, **kwargs)
    return runs


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.zeros(0)


def assert_runs_close(actual: Run, expected: Run, param_tol: dict, state_tol: dict) -> None:
    torch.testing.assert_close(_flat(actual.params), _flat(expected.params), **param_tol)
    for got, want in zip(actual.states, expected.states, strict=True):
        torch.testing.assert_close(_flat(got), _flat(want), **state_tol)


BITWISE_TOL = {'rtol': 0.0, 'atol': 0.0}


def _ext_vs_ieee_tolerance(dtype: torch.dtype) -> dict:
    return BITWISE_TOL if BITWISE else tolerance('fused_optim', dtype)


# One variant per op over every size case and dtype; the other variants on a small mixed
# list (test_ext_variants). 278011 elements x 100 steps costs ~0.3 s in the reference.
MAIN_VARIANTS = ['adamw', 'sgd_nesterov_wd', 'schedule_free_wd']
MIXED_SHAPES = [(1,), (0,), (6, 42, 123), (7,), (513,), (1000,), (2, 3), ()]


@pytest.mark.ext
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('name', MAIN_VARIANTS)
def test_ext_matches_reference(name, case, dtype):
    """Params and state after 100 steps equal the reference's (IEEE sqrt) bit for bit."""
    variant = VARIANTS[name]
    impls = {'ext': variant.op, 'reference': with_ieee_sqrt(variant.reference)}
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a fallback warning would mean the ext was not used
        runs = trajectories(variant, CASES[case], dtype, impls)
    tol = _ext_vs_ieee_tolerance(dtype)
    assert_runs_close(runs['ext'], runs['reference'], tol, _ext_vs_ieee_tolerance(torch.float32))
    assert all(p.dtype == dtype for p in runs['ext'].params)
    assert all(s.dtype == torch.float32 for states in runs['ext'].states for s in states)


@pytest.mark.ext
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('name', list(VARIANTS))
def test_ext_variants(name, dtype):
    """Every variant, bit for bit vs the IEEE-sqrt reference and within 'fused_optim' of the
    reference as written (torch.sqrt), whose one-ulp sqrt differences this measures.

    With 16-bit params only the params are compared to the torch.sqrt reference: a param
    that rounded the other way feeds Schedule-Free's z through the weight decay, and the
    'fused_optim' entries bound params, not that.
    """
    variant = VARIANTS[name]
    impls = {'ext': variant.op, 'ieee_reference': with_ieee_sqrt(variant.reference)}
    if name not in SQRT_FREE:
        impls['reference'] = variant.reference
    runs = trajectories(variant, MIXED_SHAPES, dtype, impls, seed=1)
    assert_runs_close(
        runs['ext'],
        runs['ieee_reference'],
        _ext_vs_ieee_tolerance(dtype),
        _ext_vs_ieee_tolerance(torch.float32),
    )
    if 'reference' in runs:
        got, want = runs['ext'], runs['reference']
        tol = tolerance('fused_optim', dtype)
        torch.testing.assert_close(_flat(got.params), _flat(want.params), **tol)
        if dtype == torch.float32:
            for a, b in zip(got.states, want.states, strict=True):
                torch.testing.assert_close(_flat(a), _flat(b), **tol)


@pytest.mark.ext
@pytest.mark.parametrize('name', MAIN_VARIANTS)
def test_ext_mixed_param_dtypes_in_one_list(name):
    """One call may mix fp32, bf16 and fp16 params (each grad has its param's dtype)."""
    variant = VARIANTS[name]
    shapes = [(5, 7), (1000,), (33,), (0,), (2, 3, 4), (600,)]
    dtypes = [DTYPES[i % len(DTYPES)] for i in range(len(shapes))]
    gen = torch.Generator().manual_seed(3)
    init = [torch.randn(s, generator=gen).to(d) for s, d in zip(shapes, dtypes)]
    runs = {}
    for impl in ('ext', 'reference'):
        params = [p.clone() for p in init]
        runs[impl] = Run(params, variant.init_states(params))
    reference = with_ieee_sqrt(variant.reference)
    for kwargs in variant.step_kwargs(20):
        grads = [torch.randn(s, generator=gen).to(d) for s, d in zip(shapes, dtypes)]
        variant.op(runs['ext'].params, grads, *runs['ext'].states, **kwargs)
        reference(runs['reference'].params, grads, *runs['reference'].states, **kwargs)
    for got, want in zip(runs['ext'].params, runs['reference'].params):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, **_ext_vs_ieee_tolerance(got.dtype))
    for got, want in zip(runs['ext'].states, runs['reference'].states):
        torch.testing.assert_close(_flat(got), _flat(want), **_ext_vs_ieee_tolerance(torch.float32))


@pytest.mark.ext
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
def test_ext_16bit_rounding_of_every_bit_pattern(dtype):
    """Narrowing to 16 bits equals torch's copy_ for every param bit pattern.

    Plain SGD, p - lr * g, over all 65536 params (nan, inf, subnormals, signed zeros
    included) against shuffled 16-bit grads: with lr a power of two the fp32 result is
    exact and often a tie; with lr = 0.3 it is not. Compared as bit patterns (nan aside).
    """
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    perm = torch.randperm(bits.numel(), generator=torch.Generator().manual_seed(0))
    params, grad = bits.view(dtype), bits[perm].view(dtype)
    hp = {
        'momentum': 0.0,
        'dampening': 0.0,
        'weight_decay': 0.0,
        'nesterov': False,
        'first_step': True,
    }
    for lr in (1.0, 2.0**-3, 2.0**-12, 0.3):
        got, want = params.clone(), params.clone()
        sgd_([got], [grad], [], lr=lr, **hp)
        sgd_reference([want], [grad], [], lr=lr, **hp)
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan)
        assert torch.equal(got.view(torch.int16)[~nan], want.view(torch.int16)[~nan]), lr


@pytest.mark.ext
def test_ext_is_deterministic_across_thread_counts():
    variant = VARIANTS['adamw']
    shapes = CASES['many_small'] + [(278011,)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(trajectories(variant, shapes, torch.bfloat16, {'ext': adam_}, steps=3))
    finally:
        torch.set_num_threads(threads)
    for runs in results[1:]:
        assert_runs_close(runs['ext'], results[0]['ext'], BITWISE_TOL, BITWISE_TOL)


@pytest.mark.ext
def test_ext_public_op_is_the_binding():
    """On contiguous CPU lists the public op runs the kernel: same bits as the binding."""
    shapes = [(6, 42, 123), (17,)]
    a = [torch.randn(s) for s in shapes]
    g = [torch.randn(s) for s in shapes]
    b = [t.clone() for t in a]
    m1, v1 = [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    m2, v2 = [torch.zeros(s) for s in shapes], [torch.zeros(s) for s in shapes]
    adam_(a, g, m1, v1, step=3, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)
    _ext.load_ext().adam_(b, g, m2, v2, 3, 1e-2, 0.9, 0.99, 1e-8, 0.1, False)
    for x, y in zip(a + m1 + v1, b + m2 + v2):
        torch.testing.assert_close(x, y, **BITWISE_TOL)


@pytest.mark.ext
def test_ext_bumps_version_counters_and_leaves_grads_alone():
    p = torch.randn(10, requires_grad=True)
    g = torch.randn(10)
    m, v = torch.zeros(10), torch.zeros(10)
    g_before = g.clone()
    versions = [t._version for t in (p, m, v)]
    adam_([p], [g], [m], [v], step=1, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0)
    assert all(t._version > before for t, before in zip((p, m, v), versions))
    torch.testing.assert_close(g, g_before, **BITWISE_TOL)
    assert p.requires_grad and p.grad is None


def test_scalars_may_be_0d_tensors():
    """0-d tensor hyperparameters act as their float() values, on every path.

    float64 tensors, so float() is the Python float itself and the bits must match.
    """
    shapes = [(40,), (3, 5)]
    variant = VARIANTS['schedule_free_wd']
    kwargs = variant.step_kwargs(3)[2]
    gen = torch.Generator().manual_seed(5)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    results = {}
    for impl in (variant.op, variant.reference):
        for as_tensor in (False, True):
            kw = {
                k: torch.tensor(v, dtype=torch.float64) if as_tensor else v
                for k, v in kwargs.items()
            }
            params = [p.clone() for p in init]
            states = variant.init_states(params)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', RuntimeWarning)  # no-ext notice
                impl(params, grads, *states, **kw)
            results[impl, as_tensor] = params + states[0] + states[1]
    for impl in (variant.op, variant.reference):
        for x, y in zip(results[impl, True], results[impl, False]):
            torch.testing.assert_close(x, y, **BITWISE_TOL)


# --------------------------------------------------------------------------------------
# Dispatch: fallbacks and errors.


@pytest.fixture
def ext_unavailable(monkeypatch):
    """Makes the ops behave as if kernels._C had failed to import, with a fresh warn-once."""
    monkeypatch.setattr(_ext, '_loaded', True)
    monkeypatch.setattr(_ext, '_module', None)
    monkeypatch.setattr(_ext, '_import_error', ImportError('forced by test'))
    monkeypatch.setattr(_ext, '_warned', False)


def _assert_op_is_reference(name: str, params) -> None:
    """The public op on these params gives exactly the reference's result, silently."""
    variant = VARIANTS[name]
    shapes = [tuple(p.shape) for p in params]
    gen = torch.Generator().manual_seed(7)
    grads = [torch.randn(s, generator=gen).to(p.dtype) for s, p in zip(shapes, params)]
    kwargs = variant.step_kwargs(2)[1]
    ours, ref = [p.clone() for p in params], [p.clone() for p in params]
    ours_states, ref_states = variant.init_states(ours), variant.init_states(ref)
    variant.op(ours, grads, *ours_states, **kwargs)
    variant.reference(ref, grads, *ref_states, **kwargs)
    flat_ours = ours + [t for states in ours_states for t in states]
    flat_ref = ref + [t for states in ref_states for t in states]
    for x, y in zip(flat_ours, flat_ref):
        torch.testing.assert_close(x, y, **BITWISE_TOL)


@pytest.mark.parametrize('name', MAIN_VARIANTS)
def test_non_contiguous_or_fp64_lists_take_the_reference(name):
    transposed = torch.randn(9, 11).t()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # no-ext notice on unbuilt machines
        _assert_op_is_reference(name, [torch.randn(5), transposed])
        _assert_op_is_reference(name, [torch.randn(5, dtype=torch.float64)])


@pytest.mark.parametrize('name', MAIN_VARIANTS)
def test_fallback_is_the_reference_and_warns_once(ext_unavailable, name):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        _assert_op_is_reference(name, [torch.randn(5), torch.randn(3, 4)])
        _assert_op_is_reference(name, [torch.randn(7, dtype=torch.bfloat16)])
    messages = [str(w.message) for w in record if 'kernels._C' in str(w.message)]
    assert len(messages) == 1, messages
    assert 'pip install --no-build-isolation -e .' in messages[0]


def test_cuda_route_without_triton_warns_and_takes_the_reference(monkeypatch):
    """If kernels.triton_optim fails to import, CUDA calls fall back (checked off-GPU)."""

    def fail(name):
        raise ImportError(f'no {name} (forced by test)')

    fused_optim_module._triton_module.cache_clear()
    monkeypatch.setattr(fused_optim_module.importlib, 'import_module', fail)
    try:
        with pytest.warns(RuntimeWarning, match='fall back to their PyTorch references'):
            assert fused_optim_module._triton_module() is None
    finally:
        fused_optim_module._triton_module.cache_clear()


@pytest.mark.parametrize('op', [adam_, sgd_, schedule_free_adamw_, adam_reference])
def test_empty_list_is_a_no_op(op):
    hp = {
        adam_: {'step': 1, 'lr': 0.1, 'beta1': 0.9, 'beta2': 0.99, 'eps': 1e-8, 'weight_decay': 0},
        adam_reference: {
            'step': 1,
            'lr': 0.1,
            'beta1': 0.9,
            'beta2': 0.99,
            'eps': 1e-8,
            'weight_decay': 0,
        },
        sgd_: {
            'lr': 0.1,
            'momentum': 0.0,
            'dampening': 0,
            'weight_decay': 0,
            'nesterov': False,
            'first_step': True,
        },
        schedule_free_adamw_: VARIANTS['schedule_free'].step_kwargs(1)[0],
    }[op]
    n_states = 1 if op is sgd_ else 2
    op([], [], *([[]] * n_states), **hp)


def test_bad_scalars_and_list_lengths_raise():
    p, g, m, v = [torch.zeros(3)], [torch.zeros(3)], [torch.zeros(3)], [torch.zeros(3)]
    hp = {'lr': 0.1, 'beta1': 0.9, 'beta2': 0.99, 'eps': 1e-8, 'weight_decay': 0}
    for op in (adam_, adam_reference):
        with pytest.raises(ValueError, match='step is 0'):
            op(p, g, m, v, step=0, **hp)
        with pytest.raises(ValueError, match='exp_avg_sqs has 0 tensors'):
            op(p, g, m, [], step=1, **hp)
    sgd_hp = {'lr': 0.1, 'dampening': 0, 'weight_decay': 0, 'nesterov': False, 'first_step': True}
    for op in (sgd_, sgd_reference):
        with pytest.raises(ValueError, match='momentum is 0 but 1 momentum_buffers'):
            op(p, g, m, momentum=0.0, **sgd_hp)
        with pytest.raises(ValueError, match='momentum_buffers has 0 tensors'):
            op(p, g, [], momentum=0.9, **sgd_hp)


@pytest.mark.ext
def test_ext_shape_mismatch_names_the_index():
    p = [torch.zeros(3), torch.zeros(4)]
    g = [torch.zeros(3), torch.zeros(2, 2)]
    m, v = [torch.zeros(3), torch.zeros(4)], [torch.zeros(3), torch.zeros(4)]
    with pytest.raises(ValueError, match=r'adam_: grads\[1\] has shape \[2, 2\]'):
        adam_(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0)


def _binding_args(op: str, lists: list[list[torch.Tensor]]) -> tuple:
    return {
        'adam_': (*lists, 1, 0.1, 0.9, 0.99, 1e-8, 0.0, False),
        'sgd_': (*lists, 0.1, 0.9, 0.0, 0.0, False, False),
        'schedule_free_adamw_': (*lists, 0.1, 0.5, -0.1, 0.99, 0.01, 1e-8, 0.0),
    }[op]


BAD_ENTRIES = {
    # name: (list index, tensor index, replacement, error, message)
    'param_non_contiguous': (
        0,
        1,
        torch.zeros(4, 3).t(),
        ValueError,
        r'params\[1\] is not contiguous',
    ),
    'param_fp64': (
        0,
        2,
        torch.zeros(5, dtype=torch.float64),
        TypeError,
        r'params\[2\] has dtype Double',
    ),
    'grad_dtype': (
        1,
        0,
        torch.zeros(2, dtype=torch.bfloat16),
        TypeError,
        r'grads\[0\] has dtype BFloat16; expected Float',
    ),
    'grad_meta': (1, 2, torch.zeros(5, device='meta'), ValueError, r'grads\[2\] is on meta'),
    'state_bf16': (
        2,
        1,
        torch.zeros(3, 4, dtype=torch.bfloat16),
        TypeError,
        r'\[1\] has dtype BFloat16; expected float32',
    ),
    'state_shape': (3, 0, torch.zeros(3), ValueError, r'\[0\] has shape \[3\]; expected \[2\]'),
    'state_sparse': (2, 2, torch.zeros(5).to_sparse(), ValueError, r'\[2\] has layout'),
}


_N_LISTS = {'adam_': 4, 'sgd_': 3, 'schedule_free_adamw_': 4}


@pytest.mark.ext
@pytest.mark.parametrize(
    'op, bad',
    [(op, bad) for op in _N_LISTS for bad in BAD_ENTRIES if BAD_ENTRIES[bad][0] < _N_LISTS[op]],
)
def test_ext_torch_check_names_the_index(op, bad):
    """The C++ TORCH_CHECKs, called without the Python router, and nothing is written."""
    which, index, replacement, error, message = BAD_ENTRIES[bad]
    n_lists = _N_LISTS[op]
    shapes = [(2,), (3, 4), (5,)]
    gen = torch.Generator().manual_seed(0)
    lists = [[torch.rand(s, generator=gen) for s in shapes] for _ in range(n_lists)]
    lists[which][index] = replacement
    before = [t.clone() for t in lists[0] if t.layout == torch.strided and not t.is_meta]
    with pytest.raises(error, match=f'{op}: .*{message}'):
        getattr(_ext.load_ext(), op)(*_binding_args(op, lists))
    after = [t for t in lists[0] if t.layout == torch.strided and not t.is_meta]
    for x, y in zip(after, before):
        torch.testing.assert_close(x, y, **BITWISE_TOL)


# --------------------------------------------------------------------------------------
# References vs the optimizers they reduce to (fp32).

REDUCTION_SHAPES = [(1,), (0,), (6, 42, 123), (278011,)] + _many_small_shapes(20)


def _run_torch_optimizer(make, shapes=REDUCTION_SHAPES, steps: int = STEPS, train=False):
    """A torch.optim-style optimizer over ``steps`` steps of trajectories()'s gradients."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).requires_grad_(True) for s in shapes]
    source = GradSource(shapes, torch.float32, steps, gen)
    opt = make(params)
    if train:
        opt.train()
    for k in range(steps):
        for p, g in zip(params, source.step(k)):
            p.grad = g.clone()  # schedulefree divides p.grad in place
        opt.step()
    return [p.detach() for p in params], opt


def _assert_reduces_to(ours: Run, params, states) -> None:
    tol = tolerance('fused_optim', torch.float32)
    torch.testing.assert_close(_flat(ours.params), _flat(params), **tol)
    for got, want in zip(ours.states, states, strict=True):
        torch.testing.assert_close(_flat(got), _flat(want), **tol)


@pytest.mark.parametrize('weight_decay', [0.0, 0.1])
def test_adam_reference_is_torch_adamw(weight_decay):
    hp = dict(ADAM_HP, weight_decay=weight_decay)
    variant = Variant(
        adam_reference, adam_reference, 2, lambda n: [dict(step=k + 1, **hp) for k in range(n)]
    )
    ours = trajectories(variant, REDUCTION_SHAPES, torch.float32, {'r': adam_reference})['r']
    params, opt = _run_torch_optimizer(
        lambda p: torch.optim.AdamW(
            p, lr=hp['lr'], betas=(hp['beta1'], hp['beta2']), eps=hp['eps'],
            weight_decay=weight_decay, foreach=False,
        )
    )  # fmt: skip
    states = [
        [opt.state[p][k] for p in opt.param_groups[0]['params']] for k in ('exp_avg', 'exp_avg_sq')
    ]
    _assert_reduces_to(ours, params, states)


def test_adam_reference_nesterov_is_upstream_nadamw():
    hp = dict(ADAM_HP)
    ours = trajectories(VARIANTS['nadamw'], REDUCTION_SHAPES, torch.float32, {'r': adam_reference})[
        'r'
    ]
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen) for s in REDUCTION_SHAPES]
    source = GradSource(REDUCTION_SHAPES, torch.float32, STEPS, gen)
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    for k in range(STEPS):
        nadamw_reference(
            params, source.step(k), m, v, k + 1, hp['lr'], hp['beta1'], hp['beta2'], hp['eps'],
            hp['weight_decay'],
        )  # fmt: skip
    _assert_reduces_to(ours, params, [m, v])


@pytest.mark.parametrize('name', [n for n in VARIANTS if n.startswith('sgd')])
def test_sgd_reference_is_torch_sgd(name):
    variant = VARIANTS[name]
    kwargs = variant.step_kwargs(1)[0]
    ours = trajectories(variant, REDUCTION_SHAPES, torch.float32, {'r': sgd_reference})['r']
    params, opt = _run_torch_optimizer(
        lambda p: torch.optim.SGD(
            p, lr=kwargs['lr'], momentum=kwargs['momentum'], dampening=kwargs['dampening'],
            weight_decay=kwargs['weight_decay'], nesterov=kwargs['nesterov'], foreach=False,
        )
    )  # fmt: skip
    group = opt.param_groups[0]['params']
    states = [[opt.state[p]['momentum_buffer'] for p in group] if kwargs['momentum'] else []]
    _assert_reduces_to(ours, params, states)


@pytest.mark.parametrize('foreach', [True, False], ids=['foreach', 'for_loop'])
@pytest.mark.parametrize('name', ['schedule_free', 'schedule_free_wd'])
def test_schedule_free_reference_is_the_package(name, foreach):
    schedulefree = pytest.importorskip('schedulefree')
    variant = VARIANTS[name]
    wd = variant.step_kwargs(1)[0]['weight_decay']
    ours = trajectories(variant, REDUCTION_SHAPES, torch.float32, {'r': variant.reference})['r']
    params, opt = _run_torch_optimizer(
        lambda p: schedulefree.AdamWScheduleFree(
            p, lr=SF_HP['lr'], betas=(SF_HP['beta1'], SF_HP['beta2']), eps=SF_HP['eps'],
            weight_decay=wd, warmup_steps=SF_HP['warmup_steps'], r=SF_HP['r'],
            weight_lr_power=SF_HP['weight_lr_power'], foreach=foreach,
        ),
        train=True,
    )  # fmt: skip
    group = opt.param_groups[0]['params']
    states = [[opt.state[p][k] for p in group] for k in ('z', 'exp_avg_sq')]
    _assert_reduces_to(ours, params, states)


# --------------------------------------------------------------------------------------
# GPU path and packaging.


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', DTYPES, ids=str)
@pytest.mark.parametrize('name', MAIN_VARIANTS)
def test_cuda_matches_reference(name, dtype):
    """CUDA lists go to kernels.triton_optim (or the reference); either agrees with the
    CPU reference within 'fused_optim' (params) after 100 steps."""
    variant = VARIANTS[name]
    shapes = [(1,), (0,), (6, 42, 123), (278011,)] + _many_small_shapes(20)

    def on_cuda(params, grads, *states, **kwargs):
        moved = [[t.cuda() for t in lst] for lst in (params, grads, *states)]
        variant.op(*moved, **kwargs)
        for lst, new in zip((params, *states), (moved[0], *moved[2:])):
            for t, n in zip(lst, new):
                t.copy_(n)

    runs = trajectories(variant, shapes, dtype, {'cuda': on_cuda, 'reference': variant.reference})
    torch.testing.assert_close(
        _flat(runs['cuda'].params),
        _flat(runs['reference'].params),
        **tolerance('fused_optim', dtype),
    )


def test_import_does_not_load_the_extension_or_triton():
    code = (
        'import sys, torch, kernels\n'
        "assert 'kernels._C' not in sys.modules\n"
        "assert 'kernels.triton_optim' not in sys.modules and 'triton' not in sys.modules\n"
        'assert not torch.cuda.is_initialized()\n'
    )
    result = subprocess.run(
        [sys.executable, '-c', code], check=False, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_public_api():
    for name in ('adam_', 'sgd_', 'schedule_free_adamw_'):
        assert getattr(kernels, name) is getattr(fused_optim_module, name)
        assert getattr(kernels, name.rstrip('_') + '_reference') is getattr(
            fused_optim_module, name.rstrip('_') + '_reference'
        )
