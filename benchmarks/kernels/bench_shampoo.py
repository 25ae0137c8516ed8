"""Shampoo's step cost on ResNet-50's parameters, against the fused NAdamW step.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/kernels/bench_shampoo.py \
        --benchmark-json=benchmarks/results/shampoo_<hw>_<yyyymmdd>.json

Parameters: torchvision ResNet-50's 161 fp32 tensors (25.6M elements) with fixed random
gradients; Shampoo as the AlgoPerf entry ran it (max_preconditioner_dim 1024, Adam
grafting, NAdam filtering, decoupled decay; 135 factors: 29 of 1024, 27 of 512, ...).

Providers (one group; the peer is ``nadamw_fused``, submissions.optimizers.NAdamW):
    shampoo_step: a steady-state step without a root update (factor updates, grafting and
        the preconditioned direction; ~8 b flops per parameter of a b x b block).
    shampoo_root_update: recomputing every root (``Shampoo._compute_roots``), what a step
        adds every ``precondition_frequency`` steps.
The per-step cost at frequency f is ``shampoo_step + shampoo_root_update / f``; the
readings in RESULTS.md give it for f = 1, 10, 100 from the medians of one run.
"""

import pytest
import torch
from _harness import rounds
from bench_multi_tensor_l2norm import resnet50_param_shapes

from submissions.optimizers.nadamw import NAdamW
from submissions.optimizers.shampoo import Shampoo

ROUNDS = {'nadamw_fused': 20, 'shampoo_step': 5, 'shampoo_root_update': 3}
HP = dict(lr=1e-3, betas=(0.9, 0.9955), epsilon=1e-8, weight_decay=0.08)


def _params():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).requires_grad_() for s in resnet50_param_shapes()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-2
    return params


def _shampoo(params):
    # Start preconditioning at step 2 with one root update there, then never again.
    opt = Shampoo(params, grafting_beta2=0.9955, use_nadam=True, precondition_frequency=2,
                  start_preconditioning_step=2, **HP)  # fmt: skip
    opt.step()
    opt.step()
    opt.param_groups[0]['precondition_frequency'] = 10**9
    return opt


@pytest.mark.parametrize('provider', list(ROUNDS))
def test_shampoo_resnet50(benchmark, provider):
    params = _params()
    if provider == 'nadamw_fused':
        opt = NAdamW(params, lr=1e-3, betas=(0.9, 0.9955), weight_decay=0.08)
        fn = opt.step
    else:
        opt = _shampoo(params)
        if provider == 'shampoo_step':
            fn = opt.step
        else:
            due = [p for p in params if opt._plans[p].preconditioned]

            def fn():
                opt._compute_roots(due, opt.param_groups[0])

    benchmark.group = 'shampoo_resnet50'
    benchmark.extra_info.update(
        device='cpu', peer='nadamw_fused', numel=sum(p.numel() for p in params)
    )
    benchmark.pedantic(fn, rounds=rounds(ROUNDS[provider]), warmup_rounds=1, iterations=1)
    if provider == 'shampoo_root_update':
        factors = sum(
            len(fs) for p in params if 'factors' in opt.state[p] for fs in opt.state[p]['factors']
        )
        benchmark.extra_info['report'] = {'roots per update': factors}
