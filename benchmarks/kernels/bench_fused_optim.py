"""Optimizer steps: kernels.fused_optim vs torch.optim, upstream loops and schedulefree.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/kernels/bench_fused_optim.py \
        --benchmark-json=benchmarks/results/fused_optim_<hw>_<yyyymmdd>.json

Smoke run (each provider once, no timing)::

    python -m pytest benchmarks/kernels/bench_fused_optim.py --benchmark-disable

Parameter sets: ResNet-50's 161 parameter tensors (shapes from
bench_multi_tensor_l2norm.py) with every tensor's size scaled so the total is 1M or 10M
fp32 elements: the same mix of a few large convs and many small norm vectors at two
scales, in cache and from DRAM. A 100M set (~1.6 GB of params, grads and state per
provider) runs only with ``ALGOPERF_BENCH_FUSED_OPTIM_100M=1``.

Groups (one per update and size, so the report shows ratios within each) and providers:
    adamw: ``ext`` (kernels.adam_, the C++ kernel on CPU), ``reference``
        (adam_reference), ``torch_fused`` (peer: torch.optim.AdamW(fused=True)),
        ``torch_foreach``, ``torch_for_loop``.
    nadamw: ``ext`` (adam_ with nesterov=True), ``upstream_loop`` (peer: AlgoPerf's
        per-tensor NAdamW loop with its ``.item()`` per tensor, written out below),
        ``torch_nadam_foreach`` (torch.optim.NAdam(decoupled_weight_decay=True,
        foreach=True): torch's NAdam differs from NAdamW by its momentum-decay schedule,
        a runtime peer only).
    sgd_momentum: ``ext`` (kernels.sgd_, momentum 0.9, Nesterov), ``torch_fused`` (peer),
        ``torch_foreach``.
    schedule_free: ``ext`` (kernels.schedule_free_adamw_), ``schedulefree_foreach``
        (peer: the package's default), ``schedulefree_for_loop``; skipped when the
        ``schedulefree`` package is not installed.

Bytes moved per fp32 parameter (read p, g and the state; write p and the state): 28 for
AdamW, NAdamW and Schedule-Free, 20 for SGD with momentum.
"""

import math
import os

import pytest
import torch
from _harness import record_bytes_moved, rounds
from bench_multi_tensor_l2norm import resnet50_param_shapes

from kernels import adam_, adam_reference, ext_available, schedule_free_adamw_, sgd_

SIZES = {'1m': 1_000_000, '10m': 10_000_000}
if os.environ.get('ALGOPERF_BENCH_FUSED_OPTIM_100M', '') not in ('', '0'):
    SIZES['100m'] = 100_000_000
# Rounds per size: a stable median at ~1 ms (1m) and ~10-100 ms (10m) per step on a 2-core
# CPU while keeping the slowest provider (the reference, the upstream loop) under ~30 s.
ROUNDS = {'1m': 50, '10m': 10, '100m': 3}
WARMUP_ROUNDS = 2
BYTES_PER_PARAM = {'adamw': 28, 'nadamw': 28, 'schedule_free': 28, 'sgd_momentum': 20}
PEERS = {
    'adamw': 'torch_fused',
    'nadamw': 'upstream_loop',
    'sgd_momentum': 'torch_fused',
    'schedule_free': 'schedulefree_foreach',
}
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 0.1


def resnet50_like_shapes(total: int) -> list[tuple[int, ...]]:
    """ResNet-50's 161 parameter tensors, each flattened and scaled to sum to ~``total``."""
    numels = [math.prod(s) for s in resnet50_param_shapes()]
    scale = total / sum(numels)
    return [(max(1, round(n * scale)),) for n in numels]


class Lists:
    """fp32 params with grads and zeroed state lists, for the functional providers."""

    def __init__(self, shapes, n_states: int):
        gen = torch.Generator().manual_seed(0)
        self.params = [torch.randn(s, generator=gen) for s in shapes]
        self.grads = [torch.randn(s, generator=gen) for s in shapes]
        self.states = [[torch.zeros(s) for s in shapes] for _ in range(n_states)]


def _torch_params(shapes) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).requires_grad_(True) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def _torch_optimizer(make):
    def factory(shapes):
        return make(_torch_params(shapes)).step

    return factory


def _adam_functional(op, nesterov: bool):
    def factory(shapes):
        t = Lists(shapes, 2)
        hp = {'lr': LR, 'beta1': BETAS[0], 'beta2': BETAS[1], 'eps': EPS, 'weight_decay': WD}

        def step():
            op(t.params, t.grads, *t.states, step=10, nesterov=nesterov, **hp)

        return step

    return factory


def upstream_nadamw_loop(params, grads, exp_avgs, exp_avg_sqs, state_steps, lr, beta1, beta2,
                         eps, weight_decay):  # fmt: skip
    """AlgoPerf's PyTorch NAdamW step (``_single_tensor_nadamw``), op for op.

    mlcommons/algorithmic-efficiency, pytorch_nadamw_full_budget.py: a Python loop over
    tensors, ~13 elementwise passes per tensor (the Nesterov look-ahead is applied to
    exp_avg and undone afterwards) and a ``step_t.item()`` per tensor. Kept here, not in
    kernels/, because it is only a timing peer: its math is nadamw_reference's.
    """
    for i, param in enumerate(params):
        grad, exp_avg, exp_avg_sq, step_t = grads[i], exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        step_t += 1
        param.mul_(1 - lr * weight_decay)
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = math.sqrt(bias_correction2)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)
        exp_avg.sub_(grad, alpha=1 - beta1).div_(beta1)


def _upstream_nadamw(shapes):
    t = Lists(shapes, 2)
    state_steps = [torch.tensor(0.0) for _ in shapes]

    def step():
        with torch.no_grad():
            upstream_nadamw_loop(t.params, t.grads, *t.states, state_steps, LR, *BETAS, EPS, WD)

    return step


def _sgd_ext(shapes):
    t = Lists(shapes, 1)
    hp = {'lr': LR, 'momentum': 0.9, 'dampening': 0.0, 'weight_decay': WD, 'nesterov': True}

    def step():
        sgd_(t.params, t.grads, *t.states, first_step=False, **hp)

    return step


def _schedule_free_ext(shapes):
    t = Lists(shapes, 2)
    t.states[0] = [p.clone() for p in t.params]  # z starts at the params
    k, beta1 = 10, BETAS[0]
    ckp1 = 1 / (k + 1)  # the package's default r=0 with a constant lr

    def step():
        schedule_free_adamw_(
            t.params, t.grads, *t.states, lr=LR, ckp1=ckp1,
            adaptive_y_lr=LR * (beta1 * (1 - ckp1) - 1), beta2=BETAS[1],
            bias_correction2=1 - BETAS[1] ** (k + 1), eps=EPS, weight_decay=WD,
        )  # fmt: skip

    return step


def _schedule_free_package(foreach: bool):
    def factory(shapes):
        schedulefree = pytest.importorskip('schedulefree')
        opt = schedulefree.AdamWScheduleFree(
            _torch_params(shapes), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=foreach
        )
        opt.train()
        # The package overwrites p.grad with its normalised update each step, so later
        # steps see those (O(1), never subnormal: checked); restoring the grads would add
        # a copy to the timed call.
        return opt.step

    return factory


PROVIDERS = {
    'adamw': {
        'ext': _adam_functional(adam_, nesterov=False),
        'reference': _adam_functional(adam_reference, nesterov=False),
        'torch_fused': _torch_optimizer(
            lambda p: torch.optim.AdamW(p, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, fused=True)
        ),
        'torch_foreach': _torch_optimizer(
            lambda p: torch.optim.AdamW(
                p, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=True
            )
        ),
        'torch_for_loop': _torch_optimizer(
            lambda p: torch.optim.AdamW(
                p, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False
            )
        ),
    },
    'nadamw': {
        'ext': _adam_functional(adam_, nesterov=True),
        'upstream_loop': _upstream_nadamw,
        'torch_nadam_foreach': _torch_optimizer(
            lambda p: torch.optim.NAdam(
                p,
                lr=LR,
                betas=BETAS,
                eps=EPS,
                weight_decay=WD,
                decoupled_weight_decay=True,
                foreach=True,
            )
        ),
    },
    'sgd_momentum': {
        'ext': _sgd_ext,
        'torch_fused': _torch_optimizer(
            lambda p: torch.optim.SGD(
                p, lr=LR, momentum=0.9, weight_decay=WD, nesterov=True, fused=True
            )
        ),
        'torch_foreach': _torch_optimizer(
            lambda p: torch.optim.SGD(
                p, lr=LR, momentum=0.9, weight_decay=WD, nesterov=True, foreach=True
            )
        ),
    },
    'schedule_free': {
        'ext': _schedule_free_ext,
        'schedulefree_foreach': _schedule_free_package(foreach=True),
        'schedulefree_for_loop': _schedule_free_package(foreach=False),
    },
}
CASES = [(update, provider) for update, providers in PROVIDERS.items() for provider in providers]


@pytest.mark.parametrize('size', list(SIZES))
@pytest.mark.parametrize('update, provider', CASES, ids=[f'{u}-{p}' for u, p in CASES])
def test_fused_optim(benchmark, update, provider, size):
    if provider == 'ext' and not ext_available():
        pytest.skip('kernels._C is not built')
    shapes = resnet50_like_shapes(SIZES[size])
    step = PROVIDERS[update][provider](shapes)
    benchmark.group = f'{update}_{size}'
    numel = sum(math.prod(s) for s in shapes)
    benchmark.extra_info.update(
        n_tensors=len(shapes),
        numel=numel,
        dtype='float32',
        torch_num_threads=torch.get_num_threads(),
        peer=PEERS[update],
    )
    benchmark.pedantic(step, rounds=rounds(ROUNDS[size]), warmup_rounds=WARMUP_ROUNDS, iterations=1)
    record_bytes_moved(benchmark, BYTES_PER_PARAM[update] * numel, 'cpu')
