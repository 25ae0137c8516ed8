"""Fused optimizers over 100-step trajectories vs the optimizers they reduce to.

AdamW vs torch.optim.AdamW; NAdamW vs upstream's NAdamW arithmetic (`nadamw_reference`);
SGD vs torch.optim.SGD; AdamWScheduleFree vs the `schedulefree` package (test-only
dependency). Parameters and state are compared; sizes include 1 element, 278,011
elements, an empty tensor and many small tensors.
"""

import copy

import pytest
import torch

from submissions.optimizers.fused import SGD, AdamW
from submissions.optimizers.nadamw import NAdamW, nadamw_reference
from submissions.optimizers.schedule_free import AdamWScheduleFree
from tolerances import tolerance

SHAPES = [(1,), (278011,), (0,), (6, 42, 123)] + [(n,) for n in (3, 17, 64, 129, 300, 511, 700)] * 8
STEPS = 100


def _params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in SHAPES]


def _grads(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(10_000 + step)
    return [torch.randn(s, generator=g).to(dtype) for s in SHAPES]


def _run(make_opt, params, steps=STEPS, before_step=None):
    params = [p.clone().requires_grad_(True) for p in params]
    opt = make_opt(params)
    for step in range(1, steps + 1):
        for p, g in zip(params, _grads(step, params[0].dtype)):
            p.grad = g.clone()
        if before_step:
            before_step(opt)
        opt.step()
    return params, opt


def _close(a, b, kind='optimizer_trajectory', dtype=torch.float32):
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **tolerance(kind, dtype))


@pytest.mark.parametrize('wd', [0.0, 0.1])
def test_adamw_matches_torch_adamw(wd):
    hp = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=wd)
    ours, o1 = _run(lambda p: AdamW(p, **hp), _params())
    theirs, o2 = _run(lambda p: torch.optim.AdamW(p, foreach=False, **hp), _params())
    _close(ours, theirs)
    for a, b in zip(ours, theirs):
        _close(
            [o1.state[a]['exp_avg'], o1.state[a]['exp_avg_sq']],
            [o2.state[b]['exp_avg'], o2.state[b]['exp_avg_sq']],
        )


def test_nadamw_matches_upstream_arithmetic():
    hp = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
    ours, opt = _run(lambda p: NAdamW(p, **hp), _params())
    ref = [p.clone() for p in _params()]
    m = [torch.zeros_like(p) for p in ref]
    v = [torch.zeros_like(p) for p in ref]
    for step in range(1, STEPS + 1):
        nadamw_reference(
            ref, _grads(step), m, v, step, hp['lr'], *hp['betas'], hp['eps'], hp['weight_decay']
        )
    _close(ours, ref)
    _close([opt.state[p]['exp_avg'] for p in ours], m)
    _close([opt.state[p]['exp_avg_sq'] for p in ours], v)


@pytest.mark.parametrize(
    'momentum, dampening, nesterov, wd',
    [
        (0.0, 0.0, False, 0.0),
        (0.9, 0.0, False, 1e-4),
        (0.9, 0.0, True, 1e-4),
        (0.9, 0.1, False, 0.0),
    ],
)
def test_sgd_matches_torch_sgd(momentum, dampening, nesterov, wd):
    hp = dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=wd)
    ours, o1 = _run(lambda p: SGD(p, **hp), _params())
    theirs, o2 = _run(lambda p: torch.optim.SGD(p, foreach=False, **hp), _params())
    # lr 0.05 with momentum amplifies the fused path's reordered fp32 arithmetic to ~2.5e-6
    # over 100 steps: the 'fused_optim' tolerance (2**-18) covers it, 'optimizer_trajectory' does not.
    _close(ours, theirs, kind='fused_optim')
    if momentum:
        _close(
            [o1.state[p]['momentum_buffer'] for p in ours],
            [o2.state[p]['momentum_buffer'] for p in theirs],
            kind='fused_optim',
        )


@pytest.mark.parametrize('wd, warmup', [(0.0, 0), (0.05, 10)])
def test_schedule_free_matches_package_including_train_eval_swap(wd, warmup):
    schedulefree = pytest.importorskip('schedulefree')
    hp = dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, warmup_steps=warmup)
    train = lambda opt: opt.train()  # noqa: E731 - upstream API: train() before each step is a no-op after the first
    ours, o1 = _run(lambda p: AdamWScheduleFree(p, **hp), _params(), before_step=train)
    theirs, o2 = _run(
        lambda p: schedulefree.AdamWScheduleFree(p, foreach=True, **hp),
        _params(),
        before_step=train,
    )
    _close(ours, theirs)  # y
    _close([o1.state[p]['z'] for p in ours], [o2.state[p]['z'] for p in theirs])
    _close([o1.state[p]['exp_avg_sq'] for p in ours], [o2.state[p]['exp_avg_sq'] for p in theirs])
    o1.eval()
    o2.eval()
    _close(ours, theirs)  # x
    o1.train()
    o2.train()
    _close(ours, theirs)  # back to y
    assert o1.param_groups[0]['k'] == o2.param_groups[0]['k'] == STEPS


def test_schedule_free_refuses_step_in_eval_mode():
    p = torch.zeros(3, requires_grad=True)
    opt = AdamWScheduleFree([p])
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match='not in train mode'):
        opt.step()


@pytest.mark.parametrize(
    'make',
    [
        lambda p: AdamW(p, lr=1e-3),
        lambda p: NAdamW(p, lr=1e-3),
        lambda p: SGD(p, lr=0.1, momentum=0.9),
    ],
)
def test_state_dict_roundtrip_continues_identically(make):
    params, opt = _run(make, _params(), steps=5)
    clone = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = make(clone)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for step in range(6, 9):
        for a, b, g in zip(params, clone, _grads(step)):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        opt2.step()
    _close(params, clone, kind='bitwise')


def test_lr_as_tensor_equals_float():
    a, _ = _run(lambda p: AdamW(p, lr=1e-3, weight_decay=0.1), _params(), steps=10)
    b, _ = _run(lambda p: AdamW(p, lr=torch.tensor(1e-3), weight_decay=0.1), _params(), steps=10)
    _close(a, b, kind='bitwise')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_params_keep_fp32_state(dtype):
    params, opt = _run(lambda p: AdamW(p, lr=1e-3), _params(dtype=dtype), steps=3)
    assert params[1].dtype == dtype
    assert opt.state[params[1]]['exp_avg'].dtype == torch.float32
    assert torch.isfinite(params[1]).all()


@pytest.mark.parametrize(
    'make',
    [
        lambda ps: AdamW(ps, lr=1e-2),
        lambda ps: SGD(ps, lr=1e-2, momentum=0.9),
        lambda ps: AdamWScheduleFree(ps, lr=1e-2),
    ],
)
def test_bf16_params_keep_fp32_state_through_load_state_dict(make):
    p = torch.randn(7, 3).bfloat16().requires_grad_()
    opt = make([p])
    getattr(opt, 'train', lambda: None)()
    p.grad = torch.randn(7, 3).bfloat16()
    opt.step()
    q = p.detach().clone().requires_grad_()
    opt2 = make([q])
    opt2.load_state_dict(opt.state_dict())
    for key, value in opt.state[p].items():
        if key != 'step':
            assert opt2.state[q][key].dtype == torch.float32, key
            torch.testing.assert_close(opt2.state[q][key], value, rtol=0, atol=0)


@pytest.mark.parametrize('nesterov', [False, True])
def test_capturable_adamw_matches_the_default_on_cpu(nesterov):
    g = torch.Generator().manual_seed(3)
    a = [torch.randn(s, generator=g).requires_grad_() for s in [(5, 7), (13,), (1,)]]
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_a = AdamW(a, lr=1e-2, weight_decay=0.1, nesterov=nesterov, capturable=True)
    opt_b = AdamW(b, lr=1e-2, weight_decay=0.1, nesterov=nesterov)
    for _ in range(10):
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape, generator=g)
            y.grad = x.grad.clone()
        opt_a.step()
        opt_b.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert opt_a.state[a[0]]['step'].device == a[0].device
    # The step tensor lives with the params after a round trip too (torch's 'capturable' rule).
    opt_c = AdamW([p.detach().clone().requires_grad_() for p in a], lr=1e-2, capturable=True)
    opt_c.load_state_dict(opt_a.state_dict())
    assert float(next(iter(opt_c.state.values()))['step']) == 10


@pytest.mark.gpu
def test_capturable_nadamw_replays_in_a_cuda_graph():
    if not torch.cuda.is_available():
        pytest.skip('needs CUDA')
    g = torch.Generator(device='cuda').manual_seed(0)
    shapes = [(512, 256), (256,), (3, 3, 16, 16)]
    params = [torch.randn(s, device='cuda', generator=g).requires_grad_() for s in shapes]
    eager = [p.detach().clone().requires_grad_() for p in params]
    for p, q in zip(params, eager):
        p.grad = torch.randn(p.shape, device='cuda', generator=g)
        q.grad = p.grad.clone()
    lr = torch.tensor(1e-3, device='cuda')
    opt = NAdamW(params, lr=lr, weight_decay=0.1, capturable=True)
    ref = NAdamW(eager, lr=1e-3, weight_decay=0.1)
    for _ in range(3):  # warmup, eager (allocates state, compiles and caches the launch plan)
        opt.step()
        ref.step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for _ in range(5):
        graph.replay()
        ref.step()
    torch.cuda.synchronize()
    assert float(opt.state[params[0]]['step']) == 3 + 5  # capturing records, it does not run
    for p, q in zip(params, eager):
        torch.testing.assert_close(p, q, **tolerance('triton_optim_params', torch.float32))
