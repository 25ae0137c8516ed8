"""Learning-rate schedules shared by the reference submissions."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def cosine_warmup_schedule(
    optimizer: torch.optim.Optimizer, step_hint: int, warmup_factor: float, *, cosine: bool = True
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over ``warmup_factor * step_hint`` steps, then cosine to 0 at step_hint.

    As upstream's baselines (and the Distributed Shampoo entry, whose ``use_cosine_decay``
    is ``cosine`` here: without it the rate stays at its peak after the warmup).
    """
    warmup_steps = int(warmup_factor * step_hint)
    warmup = LinearLR(optimizer, start_factor=1e-10, end_factor=1.0, total_iters=warmup_steps)
    if not cosine:
        return SequentialLR(optimizer, schedulers=[warmup], milestones=[])
    decay = CosineAnnealingLR(optimizer, T_max=max(step_hint - warmup_steps, 1))
    return SequentialLR(optimizer, schedulers=[warmup, decay], milestones=[warmup_steps])
