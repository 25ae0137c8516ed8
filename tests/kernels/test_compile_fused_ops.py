"""The fused optimizer updates under torch.compile: one custom op node, the fused kernel kept.

A training step (forward, ``torch.autograd.grad``, fused update) is compiled with
``fullgraph=True``; a recording backend checks that dynamo's graph calls the
``algoperf::fused_*`` op (not the reference's elementwise ops), the op's implementation is
counted once per step, and 50 compiled steps are compared with 50 eager steps of a twin.

Backend: 'aot_eager' (AOTAutograd's functionalisation and the op's fake implementation are
exercised, the graph then runs eagerly) keeps the test at a few seconds on 2 cores; the
inductor run (C++ codegen, ~1 min) is marked slow. Tolerance: 'optimizer_trajectory' — both
runs call the same fused kernel, but AOTAutograd decomposes the model's backward (tanh, mse)
into other aten ops than eager autograd, so gradients may differ by an ulp, which the
argument in tests/tolerances.py covers over tens of steps.
"""

import pytest
import torch

from kernels import fused_optim as fo
from tests.tolerances import tolerance

STEPS = 50


@pytest.fixture(autouse=True)
def _trace_autograd(monkeypatch):
    monkeypatch.setattr(torch._dynamo.config, 'trace_autograd_ops', True)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _update(kind, params, grads, state, t):
    if kind in ('adam', 'nadam'):
        fo.adam_(params, grads, state[0], state[1], step=t, lr=1e-2, beta1=0.9, beta2=0.99,
                 eps=1e-8, weight_decay=0.01, nesterov=kind == 'nadam')  # fmt: skip
    elif kind == 'sgd':
        fo.sgd_(params, grads, state[0], lr=5e-2, momentum=0.9, dampening=0.0,
                weight_decay=1e-3, nesterov=True, first_step=t == 1)  # fmt: skip
    else:
        # t is a 0-d fp64 tensor here: step-varying scalars as tensors, not Python floats
        # computed from a dynamic int (see kernels.fused_optim._split_scalar).
        ckp1 = 1.0 / t  # weight_lr_power 0: uniform averaging weights
        fo.schedule_free_adamw_(params, grads, state[0], state[1], lr=1e-2, ckp1=ckp1,
                                adaptive_y_lr=1e-2 * (0.9 * (1 - ckp1) - 1), beta2=0.99,
                                bias_correction2=1 - 0.99**t, eps=1e-8, weight_decay=1e-3)  # fmt: skip


def _runner(kind, model):
    params = list(model.parameters())
    if kind == 'schedule_free':
        state = ([p.detach().clone() for p in params], [torch.zeros_like(p) for p in params])
    else:
        state = ([torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params])

    def step(x, y, t):
        loss = ((model(x) - y) ** 2).mean()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            _update(kind, params, list(grads), state, t)
        return loss.detach()

    return step, params, state


OPS = {
    'adam': 'fused_adam',
    'nadam': 'fused_adam',
    'sgd': 'fused_sgd',
    'schedule_free': 'fused_schedule_free_adamw',
}
EAGER = {
    'adam': '_adam_eager',
    'nadam': '_adam_eager',
    'sgd': '_sgd_eager',
    'schedule_free': '_schedule_free_adamw_eager',
}


def _step_arg(kind, t):
    return torch.tensor(float(t), dtype=torch.float64) if kind == 'schedule_free' else t


def _check(kind, backend, monkeypatch):
    data = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 8, generator=data), torch.randn(16, 3, generator=data))
               for _ in range(STEPS)]  # fmt: skip
    eager_step, eager_params, _ = _runner(kind, _model())
    for t, (x, y) in enumerate(batches, 1):
        eager_step(x, y, _step_arg(kind, t))

    targets, calls, reference_calls = [], [], []

    def recording(gm, example_inputs):
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op == 'call_function')
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    real = getattr(fo, EAGER[kind])
    monkeypatch.setattr(fo, EAGER[kind], lambda *a, **k: calls.append(1) or real(*a, **k))
    for ref in ('adam_reference', 'sgd_reference', 'schedule_free_adamw_reference'):
        real_ref = getattr(fo, ref)
        monkeypatch.setattr(
            fo, ref, lambda *a, _r=real_ref, **k: reference_calls.append(1) or _r(*a, **k)
        )
    step, params, _ = _runner(kind, _model())
    compiled = torch.compile(step, backend=recording, fullgraph=True)
    for t, (x, y) in enumerate(batches, 1):
        compiled(x, y, _step_arg(kind, t))

    assert any(f'algoperf.{OPS[kind]}' in target for target in targets), targets
    assert len(calls) == STEPS  # the fused op ran at every compiled step
    if fo._ext.ext_available():
        assert not reference_calls  # the C++ kernel, not the reference, did the update
    for a, b in zip(params, eager_params):
        torch.testing.assert_close(a, b, **tolerance('optimizer_trajectory', torch.float32))


@pytest.mark.parametrize('kind', ['adam', 'nadam', 'sgd', 'schedule_free'])
def test_compiled_step_keeps_the_fused_op_and_matches_eager(kind, monkeypatch):
    _check(kind, 'aot_eager', monkeypatch)


@pytest.mark.slow
def test_inductor_step_keeps_the_fused_op_and_matches_eager(monkeypatch):
    _check('adam', 'inductor', monkeypatch)


def test_fake_implementation_leaves_meta_tensors_alone():
    """The fake (meta) implementation runs shape propagation without touching data."""
    p = [torch.empty(3, 4, device='meta')]
    fo._adam_op(p, p, p, p, 1, None, 1e-3, None, 0.9, 0.999, 1e-8, 0.0, False)
    fo._sgd_op(p, p, p, 1e-3, None, 0.9, 0.0, 0.0, False, True)
    fo._schedule_free_adamw_op(p, p, p, p, 1e-3, None, 0.5, None, -1e-3, None, 0.9, 0.1, None, 1e-8, 0.0)
