"""The benchmark clock: the one place in the harness that synchronises.

Upstream rules (spec §0.2): a time point is taken after `torch.cuda.synchronize()`
and, under DDP, is the MAX over ranks (a float64 all-reduce), so every rank
takes identical eval/stop decisions. The runner takes exactly one time point per
training step; everything else in the step loop is sync-free.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from algoperf.runtime import Runtime


class Clock:
    """Synchronised wall-clock time points for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._cuda = runtime.device.type == 'cuda'
        self._distributed = runtime.distributed
        # The all-reduce buffer lives on the collective's device (NCCL needs CUDA).
        self._buffer = None

    def now(self) -> float:
        """Seconds since the epoch, after the device has finished queued work."""
        if self._cuda:
            torch.cuda.synchronize(self._runtime.device)
        t = time.time()
        if not self._distributed:
            return t
        if self._buffer is None:
            self._buffer = torch.zeros((), dtype=torch.float64, device=self._runtime.device)
        self._buffer.fill_(t)
        dist.all_reduce(self._buffer, op=dist.ReduceOp.MAX)
        return float(self._buffer.item())
