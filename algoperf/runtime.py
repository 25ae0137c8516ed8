"""Where this process runs: device, rank, world size; process-group lifetime.

One frozen `Runtime` is built by the runner from the environment `torchrun`
sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...) and passed explicitly to
workloads, the clock and the loggers. Rank and world size never come from
`torch.cuda.device_count()`, so multi-node launches work. Scope and fallbacks:
NCCL on CUDA, gloo on CPU; a single process needs no process group.

Failure of one rank (see `publish_failure`): the failing rank writes its error
to the c10d store that torchrun's rendezvous provides and tears its process
group down, so the others' pending or next collective fails within about a
second (gloo: "Connection closed by peer", measured 1.0 s on this 2-core box)
instead of waiting for the 30-minute collective timeout; they then read the
real error from the store (`peer_failures`). Nothing of this runs per step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.distributed as dist

_log = logging.getLogger(__name__)

_FAILED_KEY = 'algoperf/failed/rank{}'
_SEEN_KEY = 'algoperf/failure_seen/rank{}'
# Words in the messages collectives raise when a peer is gone (gloo, NCCL, c10d).
_COMM_ERROR_WORDS = ('Connection closed by peer', 'Connection reset by peer', 'gloo', 'NCCL', 'ProcessGroup',
                     'process group', 'c10d', 'Broken pipe')


def _default_store():
    """The store of the default process group (torchrun's TCPStore), or None."""
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()  # Private, but the only handle on it.
    except Exception:  # noqa: BLE001 - no group, or an API change: fall back to no messages
        return None


def is_communication_error(e: BaseException) -> bool:
    """Whether `e` is a collective failing (a peer died or tore its group down)."""
    if isinstance(e, dist.DistError):
        return True
    return isinstance(e, RuntimeError) and any(w in str(e) for w in _COMM_ERROR_WORDS)


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
      local_world_size: processes on this node (torchrun's LOCAL_WORLD_SIZE);
        they share its cores (see `choose_num_threads`).
    """

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    launched_distributed: bool = False
    local_world_size: int = 1

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
        local_world_size = int(env.get('LOCAL_WORLD_SIZE', world_size if launched else 1))
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda':
            dev = torch.device('cuda', local_rank)
        elif device == 'cpu':
            dev = torch.device('cpu')
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        return cls(dev, rank, local_rank, world_size, launched, max(1, local_world_size))

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

    def publish_failure(self, message: str) -> None:
        """Tell the other ranks this rank failed (`message`), then tear down the group.

        After this the process group is gone: no collective may run in this process.
        """
        if not (self.distributed and dist.is_initialized()):
            return
        store = _default_store()
        if store is not None:
            try:
                store.set(_FAILED_KEY.format(self.rank), message)
            except Exception as e:  # noqa: BLE001 - the store may be gone too; still tear down
                _log.warning('Could not publish the failure to the other ranks: %s', e)
        self.abandon_group()

    def peer_failures(self, wait_s: float = 0.0) -> List[str]:
        """Failures other ranks published, waiting up to `wait_s` for the first one."""
        if not self.distributed:
            return []
        store = _default_store()
        if store is None:
            return []
        deadline = time.monotonic() + wait_s
        while True:
            found = []
            for r in range(self.world_size):
                if r == self.rank:
                    continue
                key = _FAILED_KEY.format(r)
                try:
                    if store.check([key]):
                        found.append(store.get(key).decode(errors='replace'))
                except Exception:  # noqa: BLE001 - store unreachable: report what we have
                    return found
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def acknowledge_failure(self) -> None:
        """Say this rank has recorded a peer's failure (the failed rank waits for it)."""
        store = _default_store()
        if store is not None:
            try:
                store.set(_SEEN_KEY.format(self.rank), '1')
            except Exception:  # noqa: BLE001
                pass

    def wait_for_acknowledgements(self, timeout_s: float) -> bool:
        """On the failed rank: wait until every other rank recorded the failure.

        torchrun stops all workers once one exits non-zero, so exiting before the
        others have written result.json would lose the error they record.
        """
        store = _default_store()
        if store is None or not self.distributed:
            return True
        keys = [_SEEN_KEY.format(r) for r in range(self.world_size) if r != self.rank]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if store.check(keys):
                    return True
            except Exception:  # noqa: BLE001
                return False
            time.sleep(0.05)
        return False

    def abandon_group(self) -> None:
        """Destroy the process group without a barrier (peers may be gone or stuck)."""
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception as e:  # noqa: BLE001
                _log.warning('Destroying the process group failed: %s', e)

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank (used for seeds and hparams)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# ---- CPU threads and machine load (timing hygiene) -------------------------------------------
# Why: on a loaded 2-core machine digits steps alternated between 0.7 ms and 150 ms with
# torch's default threads (1.05 ms steady with one), and one trial missed its budget. The
# threads a trial used and the load it ran under are therefore recorded with its logs.


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity mask; cgroup CPU quotas are not read)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def choose_num_threads(requested: int, runtime: 'Runtime',
                       env: Optional[Mapping[str, str]] = None) -> Tuple[int, str]:
    """Torch intra-op threads for this rank, and where the number came from.

    `requested` > 0 (--num_threads) wins. Otherwise (0, auto): OMP_NUM_THREADS when set
    in a process not started by torchrun (torchrun itself sets it to 1 for every
    multi-process launch, so under torchrun it says nothing about the user's wish);
    else the usable cores divided by the ranks on this node, at least 1.
    """
    env = os.environ if env is None else env
    if requested > 0:
        return requested, '--num_threads'
    omp = env.get('OMP_NUM_THREADS', '').strip()
    if omp.isdigit() and int(omp) > 0 and not runtime.launched_distributed:
        return int(omp), 'OMP_NUM_THREADS'
    cores = usable_cores()
    ranks = max(1, runtime.local_world_size)
    return max(1, cores // ranks), f'auto: {cores} usable core(s) / {ranks} rank(s) on this node'


def set_num_threads(num_threads: int) -> int:
    """Set torch's intra-op threads (process-wide); returns the number now in effect."""
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def cpu_model_name() -> Optional[str]:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform  # noqa: PLC0415

    return platform.processor() or None


def cpu_facts() -> Dict[str, Any]:
    """CPU model and core counts (logical = hardware threads; usable = this process's affinity)."""
    import psutil  # noqa: PLC0415

    return {
        'cpu_model_name': cpu_model_name(),
        'cpu_count_logical': os.cpu_count(),
        'cpu_count_physical': psutil.cpu_count(logical=False),
        'cpu_count_usable': usable_cores(),
    }


def load_average() -> Optional[List[float]]:
    """System load average over 1, 5 and 15 minutes (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def busy_machine_warning(what: str, load: Optional[List[float]]) -> Optional[str]:
    """One line when the 1-minute load average exceeds the machine's logical cores, else None.

    The load average counts runnable threads machine-wide, this process's own included, so
    a trial using every core sits near the core count; above it, something else competes
    for the cores and step times are inflated.
    """
    cores = os.cpu_count() or 1
    if load is None or load[0] <= cores:
        return None
    return (f'{what}: the machine is busier than its cores (1-minute load average {load[0]:.2f} on {cores} '
            'logical core(s)); step times may be inflated by other processes.')


class RankZeroFilter(logging.Filter):
    """Lets records through only on rank 0 (replaces upstream's monkey-patch)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self._rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self._rank == 0 or record.levelno >= logging.ERROR
