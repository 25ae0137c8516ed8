"""NAdamW: AdamW with Nesterov momentum, as in AlgoPerf's baseline (plain PyTorch).

Update for one parameter p with gradient g at step t (bias-corrected Adam
moments, decoupled weight decay, Nesterov look-ahead on the first moment):

    p   <- p * (1 - lr * wd)
    m   <- b1 * m + (1 - b1) * g
    v   <- b2 * v + (1 - b2) * g^2
    m^  <- (b1 * m + (1 - b1) * g) / (1 - b1^t)
    p   <- p - lr * m^ / (sqrt(v / (1 - b2^t)) + eps)

`NAdamW` computes this with one `torch._foreach_*` call per op over all
parameters (upstream loops over tensors in Python; same arithmetic per
element). `nadamw_reference` is the per-tensor loop in the notation above: the
spec that fused implementations (issue: fused optimizer updates) are tested
against.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor


def nadamw_reference(
    params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
    step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
) -> None:
    """One NAdamW step over lists of tensors, in place; `step` is t >= 1."""
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        p.mul_(1 - lr * weight_decay)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat = (beta1 * m + (1 - beta1) * g) / bias_correction1
        denom = (v / bias_correction2).sqrt_().add_(eps)
        p.addcdiv_(m_hat, denom, value=-lr)


class NAdamW(torch.optim.Optimizer):
    """NAdamW with foreach updates; state keys match upstream (step, exp_avg, exp_avg_sq)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if not 0.0 <= lr:
            raise ValueError(f'Invalid learning rate: {lr}')
        if not 0.0 <= eps:
            raise ValueError(f'Invalid epsilon value: {eps}')
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f'Invalid beta parameter at index 0: {betas[0]}')
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f'Invalid beta parameter at index 1: {betas[1]}')
        if not 0.0 <= weight_decay:
            raise ValueError(f'Invalid weight_decay value: {weight_decay}')
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Bucket by step count: a parameter that missed gradients earlier has a
            # smaller t and so different bias corrections (upstream keeps per-tensor steps).
            buckets = {}
            for p in group['params']:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError('NAdamW does not support sparse gradients')
                state = self.state[p]
                if not state:
                    # A CPU float step, like upstream: reading it needs no device sync.
                    state['step'] = torch.tensor(0.0)
                    state['exp_avg'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state['step'] += 1
                lists = buckets.setdefault(int(state['step'].item()), ([], [], [], []))
                for lst, t in zip(lists, (p, p.grad, state['exp_avg'], state['exp_avg_sq'])):
                    lst.append(t)
            for step, (params, grads, exp_avgs, exp_avg_sqs) in buckets.items():
                _nadamw_foreach(params, grads, exp_avgs, exp_avg_sqs, step, group)
        return loss


def _nadamw_foreach(params, grads, exp_avgs, exp_avg_sqs, step, group) -> None:
    lr, (beta1, beta2), eps, wd = group['lr'], group['betas'], group['eps'], group['weight_decay']
    torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    # Nesterov look-ahead without touching the stored moment.
    m_hat = torch._foreach_mul(exp_avgs, beta1)
    torch._foreach_add_(m_hat, grads, alpha=1 - beta1)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, m_hat, denom, value=-lr / (1 - beta1**step))
