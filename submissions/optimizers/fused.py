"""Fused torch.optim optimizers: one multi-tensor update per parameter group and step.

Each `step()` gathers the group's parameters that have gradients and calls one
functional op from `kernels.fused_optim` (C++ on CPU, Triton on CUDA, a plain-PyTorch
reference otherwise; chosen per call). State is fp32 whatever the parameter dtype
(bf16/fp16 parameters keep fp32 moments), math is fp32.

  AdamW   decoupled weight decay; `nesterov=True` gives AlgoPerf's NAdamW baseline.
          `capturable=True` keeps the step count on the params' device and never reads it on
          the host, so on CUDA a step can be captured in a CUDA graph (with a 0-d device
          tensor lr updated in place by the schedule). SGD needs no flag: its first
          step (which creates the momentum buffers) runs eagerly in the graph's warmup,
          after which its launch reads nothing from the host but a device lr.
  SGD     torch.optim.SGD semantics (momentum, dampening, Nesterov, L2 weight decay).

State is fp32 for fp32/bf16/fp16 parameters and fp64 for fp64 ones (those take the
reference path). State keys match torch's (`step`, `exp_avg`, `exp_avg_sq`, `momentum_buffer`), so
state_dict() round-trips and checkpoints look like torch's. The learning rate may be a
float or a 0-d tensor (a schedule can update it in place without changing types).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from kernels import fused_optim


def _state_dtype(p: torch.Tensor) -> torch.dtype:
    """fp32 state for 16-bit (and fp32) parameters; fp64 parameters keep fp64 state."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class KeepsStateDtype(torch.optim.Optimizer):
    """``load_state_dict`` that keeps each state tensor's saved dtype (fp32 for bf16 params).

    torch.optim casts every floating state tensor to its parameter's dtype on load, which
    would turn the fp32 moments of bf16/fp16 parameters into 16-bit ones after a resume.
    Here tensors (also inside lists, as Shampoo's factors) only move to the param's device.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict['state']
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict['param_groups'] for i in g['params']]
        params = [p for g in self.param_groups for p in g['params']]
        for pid, p in zip(ids, params):
            for key, value in saved.get(pid, {}).items():
                if key != 'step':
                    self.state[p][key] = _to_device(value, p.device)


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def _check_range(
    name: str, value, low: float, high: float = float('inf'), high_open: bool = False
) -> None:
    value = float(value)
    if not low <= value or (value >= high if high_open else value > high):
        raise ValueError(f'Invalid {name}: {value}')


class AdamW(KeepsStateDtype):
    """AdamW (or NAdamW with `nesterov=True`) with a fused multi-tensor update."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        nesterov: bool = False,
        capturable: bool = False,
    ):
        _check_range('learning rate', lr, 0.0)
        _check_range('epsilon value', eps, 0.0)
        _check_range('beta parameter at index 0', betas[0], 0.0, 1.0, high_open=True)
        _check_range('beta parameter at index 1', betas[1], 0.0, 1.0, high_open=True)
        _check_range('weight_decay value', weight_decay, 0.0)
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                nesterov=nesterov,
                capturable=capturable,
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Parameters that missed gradients on earlier steps have a smaller step count
            # (different bias corrections): one fused call per distinct count.
            buckets: Dict[Tuple[int, torch.device], Tuple[List, List, List, List]] = {}
            for p in group['params']:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f'{type(self).__name__} does not support sparse gradients')
                state = self.state[p]
                capturable = group.get('capturable', False)
                if not state:
                    # Non-capturable: a CPU float step, like torch's Adam, read without a device
                    # sync. Capturable: on the param's device, incremented there.
                    state['step'] = torch.zeros(
                        (), dtype=torch.float32, device=p.device if capturable else 'cpu'
                    )
                    state['exp_avg'] = torch.zeros_like(
                        p, dtype=_state_dtype(p), memory_format=torch.preserve_format
                    )
                    state['exp_avg_sq'] = torch.zeros_like(
                        p, dtype=_state_dtype(p), memory_format=torch.preserve_format
                    )
                state['step'] += 1
                # Capturable: one bucket per device, stepped with its first param's step tensor
                # (a CUDA graph replays a fixed set of params, all with gradients every step).
                key = (0 if capturable else int(state['step'].item()), p.device)
                lists = buckets.setdefault(key, ([], [], [], []))
                for lst, t in zip(lists, (p, p.grad, state['exp_avg'], state['exp_avg_sq'])):
                    lst.append(t)
            beta1, beta2 = group['betas']
            for (step, _), (params, grads, exp_avgs, exp_avg_sqs) in buckets.items():
                if group.get('capturable', False):
                    step = self.state[params[0]]['step']
                fused_optim.adam_(
                    params,
                    grads,
                    exp_avgs,
                    exp_avg_sqs,
                    step=step,
                    lr=group['lr'],
                    beta1=beta1,
                    beta2=beta2,
                    eps=group['eps'],
                    weight_decay=group['weight_decay'],
                    nesterov=group['nesterov'],
                )
        return loss


class SGD(KeepsStateDtype):
    """SGD with momentum / Nesterov (torch.optim.SGD semantics), fused multi-tensor update."""

    def __init__(
        self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov: bool = False
    ):
        _check_range('learning rate', lr, 0.0)
        _check_range('momentum value', momentum, 0.0)
        _check_range('weight_decay value', weight_decay, 0.0)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError('Nesterov momentum requires a momentum and zero dampening')
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group['momentum']
            # first_step: parameters whose buffer is created now (buf = g on their first step).
            buckets: Dict[Tuple[bool, torch.device], Tuple[List, List, List]] = {}
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                first = momentum != 0 and 'momentum_buffer' not in state
                if first:
                    state['momentum_buffer'] = torch.zeros_like(
                        p, dtype=_state_dtype(p), memory_format=torch.preserve_format
                    )
                params, grads, bufs = buckets.setdefault((first, p.device), ([], [], []))
                params.append(p)
                grads.append(p.grad)
                if momentum != 0:
                    bufs.append(state['momentum_buffer'])
            for (first, _), (params, grads, bufs) in buckets.items():
                fused_optim.sgd_(
                    params,
                    grads,
                    bufs,
                    lr=group['lr'],
                    momentum=momentum,
                    dampening=group['dampening'],
                    weight_decay=group['weight_decay'],
                    nesterov=group['nesterov'],
                    first_step=first,
                )
        return loss
