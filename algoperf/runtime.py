"""Where this process runs: device, rank, world size; process-group lifetime.

One frozen `Runtime` is built by the runner from the environment `torchrun`
sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...) and passed explicitly to
workloads, the clock and the loggers. Rank and world size never come from
`torch.cuda.device_count()`, so multi-node launches work. Scope and fallbacks:
NCCL on CUDA, gloo on CPU; a single process needs no process group.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping, Optional

import torch
import torch.distributed as dist

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Device and process-group facts of this process.

    Attributes:
      device: the torch device this rank computes on.
      rank: global rank (0 when not distributed).
      local_rank: rank within the node; selects the CUDA device.
      world_size: number of processes (1 when not distributed).
      launched_distributed: True when started by torchrun (even with 1 rank),
        mirroring upstream's USE_PYTORCH_DDP ('LOCAL_RANK' in the environment).
    """

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launched_distributed: bool = False

    @property
    def distributed(self) -> bool:
        """Whether collectives are needed (a process group with >1 rank)."""
        return self.launched_distributed and self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return 'nccl' if self.device.type == 'cuda' else 'gloo'

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None, device: Optional[str] = None) -> 'Runtime':
        """Read rank/world size from torchrun's variables; pick the device.

        Args:
          env: environment mapping (default os.environ).
          device: force 'cpu' or 'cuda'; default cuda when available.
        """
        env = os.environ if env is None else env
        launched = 'LOCAL_RANK' in env
        rank = int(env.get('RANK', env.get('LOCAL_RANK', 0)))
        local_rank = int(env.get('LOCAL_RANK', 0))
        world_size = int(env.get('WORLD_SIZE', 1))
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda':
            dev = torch.device('cuda', local_rank)
        elif device == 'cpu':
            dev = torch.device('cpu')
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        return cls(dev, rank, local_rank, world_size, launched)

    def init_process_group(self) -> None:
        """Join the process group (idempotent); set the CUDA device first."""
        if self.device.type == 'cuda':
            torch.cuda.set_device(self.device)
        if self.distributed and not dist.is_initialized():
            kwargs = {'device_id': self.device} if self.device.type == 'cuda' else {}
            dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size, **kwargs)
            _log.info('Joined %s process group: rank %d of %d.', self.backend, self.rank, self.world_size)

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()

    def shutdown(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank (used for seeds and hparams)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


class RankZeroFilter(logging.Filter):
    """Lets records through only on rank 0 (replaces upstream's monkey-patch)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self._rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self._rank == 0 or record.levelno >= logging.ERROR
