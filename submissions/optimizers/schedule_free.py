"""Schedule-Free AdamW (Defazio et al., 2024) with a fused multi-tensor update.

Same algorithm, hyperparameters, group keys and state keys (`z`, `exp_avg_sq`) as the
`schedulefree` package's `AdamWScheduleFree`, including `train()` / `eval()`: the module
parameters hold y (the gradient point) in train mode and x (the averaged iterate) in eval
mode, swapped by `p = p + w (z - p)` with w = 1 - beta1 (train) or 1 - 1/beta1 (eval).

Per step, with k the step count (from 0), warmup schedule s_k, lr_k = lr * s_k:
    lr_max   = max(lr_max, lr_k)
    weight   = (k + 1)^r * lr_max^weight_lr_power;  weight_sum += weight
    c        = weight / weight_sum
    v        = b2 v + (1 - b2) g^2
    d        = g / (sqrt(v / (1 - b2^(k+1))) + eps) + wd * y
    y        = (1 - c) y + c z + lr_k (b1 (1 - c) - 1) d
    z        = z - lr_k d
The scalars are computed here, exactly as the package does; the element-wise part is one
call of `kernels.fused_optim.schedule_free_adamw_` (28 bytes per fp32 parameter, where the
package's foreach path makes ~9 passes). Unlike the package, gradients are not modified in
place, and state is fp32 for bf16/fp16 parameters.
"""

from __future__ import annotations

import torch

from kernels import fused_optim
from submissions.optimizers.fused import KeepsStateDtype, _state_dtype


class AdamWScheduleFree(KeepsStateDtype):
    """Schedule-Free AdamW; call `.train()` before training steps and `.eval()` before evals."""

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps: int = 0,
                 r: float = 0.0, weight_lr_power: float = 2.0):
        if float(lr) < 0 or eps < 0 or weight_decay < 0 or not 0.0 <= betas[1] < 1.0 or not 0.0 < betas[0] < 1.0:
            raise ValueError(f'Invalid hyperparameters: lr={lr}, betas={betas}, eps={eps}, wd={weight_decay}')
        defaults = dict(lr=lr, betas=betas, eps=eps, r=r, k=0, warmup_steps=warmup_steps, train_mode=False,
                        weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0, weight_lr_power=weight_lr_power,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group['train_mode'] == to_train:
                continue
            beta1 = group['betas'][0]
            params = [p for p in group['params'] if 'z' in self.state[p]]
            if params:
                zs = [self.state[p]['z'].to(p.dtype) for p in params]
                torch._foreach_lerp_(params, zs, (1 - beta1) if to_train else (1 - 1 / beta1))
            group['train_mode'] = to_train

    def train(self) -> None:
        """Parameters hold y (where gradients are taken)."""
        self._swap(True)

    def eval(self) -> None:
        """Parameters hold x (the iterate to evaluate and checkpoint)."""
        self._swap(False)

    @torch.no_grad()
    def step(self, closure=None):
        if not self.param_groups[0]['train_mode']:
            raise RuntimeError('Optimizer was not in train mode when step is called: call optimizer.train() '
                               'before training steps and optimizer.eval() before evaluations.')
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group['betas']
            k = group['k']
            sched = (k + 1) / group['warmup_steps'] if k < group['warmup_steps'] else 1.0
            lr = group['lr'] * sched
            group['scheduled_lr'] = lr
            lr_max = group['lr_max'] = max(lr, group['lr_max'])
            weight = ((k + 1) ** group['r']) * (lr_max ** group['weight_lr_power'])
            weight_sum = group['weight_sum'] = group['weight_sum'] + weight
            ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
            params = [p for p in group['params'] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if 'z' not in state:
                    state['z'] = p.detach().to(_state_dtype(p), copy=True)
                    state['exp_avg_sq'] = torch.zeros_like(p, dtype=_state_dtype(p))
            if params:
                fused_optim.schedule_free_adamw_(
                    params, [p.grad for p in params], [self.state[p]['z'] for p in params],
                    [self.state[p]['exp_avg_sq'] for p in params], lr=lr, ckp1=ckp1,
                    adaptive_y_lr=lr * (beta1 * (1 - ckp1) - 1), beta2=beta2,
                    bias_correction2=1 - beta2 ** (k + 1), eps=group['eps'], weight_decay=group['weight_decay'],
                )
            group['k'] = k + 1
        return loss
