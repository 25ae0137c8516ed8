"""Upstream-compatible helpers that existing PyTorch submissions import.

`pytorch_setup()` is the one sanctioned piece of module-level runtime state in
this project: upstream submissions call it at import time. It reads the
environment torchrun sets; unlike upstream, RANK is the *global* rank and, under
DDP, N_GPUS is the world size, so per-device batch arithmetic
(`global_batch_size // N_GPUS`) stays right on several nodes. Without torchrun it
matches upstream: RANK 0 and N_GPUS = torch.cuda.device_count().
"""

from __future__ import annotations

import os
from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def pytorch_setup() -> Tuple[bool, int, torch.device, int]:
    """Return (USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS) like upstream."""
    use_pytorch_ddp = 'LOCAL_RANK' in os.environ
    rank = int(os.environ.get('RANK', os.environ.get('LOCAL_RANK', 0))) if use_pytorch_ddp else 0
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    device = torch.device(f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu')
    if use_pytorch_ddp:
        n_gpus = int(os.environ.get('WORLD_SIZE', 1))
    else:
        n_gpus = torch.cuda.device_count()
    return use_pytorch_ddp, rank, device, n_gpus


def pytorch_init(use_pytorch_ddp: bool, rank: int, profiler=None) -> None:
    """Upstream's process init: cudnn autotune, CUDA device, process group."""
    del profiler
    torch.backends.cudnn.benchmark = True
    if use_pytorch_ddp:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank)))
        if not dist.is_initialized():
            dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')


def sync_ddp_time(time: float, device: torch.device) -> float:
    """Max of `time` over ranks (float64 all-reduce)."""
    time_tensor = torch.tensor(time, dtype=torch.float64, device=device)
    dist.all_reduce(time_tensor, op=dist.ReduceOp.MAX)
    return time_tensor.item()


def update_batch_norm_fn(module: nn.Module, update_batch_norm: bool) -> None:
    """Freeze (momentum 0) or restore BN running-stat updates (upstream v0.6).

    Applies to torch `_BatchNorm` and to any module that declares
    `_algoperf_batch_norm = True` (our custom speech BN layers do).
    """
    is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm) or getattr(
        module, '_algoperf_batch_norm', False
    )
    if not is_bn:
        return
    if not update_batch_norm:
        if not hasattr(module, 'momentum_backup'):
            module.momentum_backup = module.momentum
        if torch.is_tensor(module.momentum_backup):
            module.momentum = torch.zeros_like(module.momentum_backup)
        else:
            module.momentum = 0.0
    elif hasattr(module, 'momentum_backup'):
        module.momentum = module.momentum_backup


class CustomDropout(nn.Module):
    """Dropout whose rate is an argument of forward (v0.6 dropout API)."""

    def __init__(self):
        super().__init__()
        self._supports_custom_dropout = True

    def forward(self, input: Tensor, p: float) -> Tensor:
        return F.dropout(input, p, training=self.training)


class CustomDropout2d(nn.Module):
    """Channel dropout whose rate is an argument of forward."""

    def __init__(self):
        super().__init__()
        self._supports_custom_dropout = True

    def forward(self, input: Tensor, p: float) -> Tensor:
        return F.dropout2d(input, p, training=self.training)


class SequentialWithDropout(nn.Sequential):
    """Sequential that passes the dropout rate to children that take one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._supports_custom_dropout = True

    def forward(self, x: Tensor, p: float) -> Tensor:
        for module in self:
            if getattr(module, '_supports_custom_dropout', False):
                x = module(x, p)
            else:
                x = module(x)
        return x
