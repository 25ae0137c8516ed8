"""The local executor: a sweep's jobs as `algoperf run` subprocesses on this machine.

Jobs run one after another, or `max_parallel` at a time, each on its own disjoint set of
`devices_per_job` CUDA devices (CUDA_VISIBLE_DEVICES) when the machine has GPUs. Each job is a
fresh process: a crash, an OOM kill or leaked state in one never reaches the others, and its
memory is returned when it ends. Finished jobs are skipped before a process is started, so
re-running the same sweep costs nothing for them; interrupted ones resume (`--resume_last_run`).
A job that needs several devices is launched through torchrun.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from algoperf.sweep import status as status_lib
from algoperf.sweep.grid import Job, SweepConfig


@dataclasses.dataclass
class LocalReport:
    """What a local sweep did; `overhead_sec` is the wall time spent outside job processes."""

    ran: List[int]
    skipped: List[int]
    returncodes: Dict[int, int]
    wall_sec: float
    job_wall_sec: Dict[int, float]

    @property
    def overhead_sec(self) -> float:
        return self.wall_sec - sum(self.job_wall_sec.values())


def job_command(job: Job, devices_per_job: int, python: str = sys.executable) -> List[str]:
    """`python -m algoperf run ...`, or torchrun over `devices_per_job` processes."""
    if devices_per_job > 1:
        return [python, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={devices_per_job}',
                '-m', 'algoperf', 'run', *job.argv]
    return [python, '-m', 'algoperf', 'run', *job.argv]


def _device_sets(max_parallel: int, devices_per_job: int) -> List[Optional[str]]:
    """CUDA_VISIBLE_DEVICES per slot, or None per slot on a machine without GPUs."""
    try:
        import torch  # noqa: PLC0415

        n = torch.cuda.device_count()
    except ImportError:
        n = 0
    if n == 0:
        return [None] * max_parallel
    if devices_per_job * max_parallel > n:
        from algoperf.config import ConfigError  # noqa: PLC0415

        raise ConfigError(f'--max_parallel={max_parallel} x --devices_per_job={devices_per_job} needs '
                          f'{max_parallel * devices_per_job} GPUs; this machine has {n}.')
    return [','.join(str(d) for d in range(k * devices_per_job, (k + 1) * devices_per_job))
            for k in range(max_parallel)]


def run_local(config: SweepConfig, jobs: Sequence[Job], *, max_parallel: int = 1, devices_per_job: int = 1,
              write: Callable[[str], None] = print, env: Optional[Dict[str, str]] = None) -> LocalReport:
    """Run every job not yet done; a failing job never stops the others."""
    start = time.monotonic()
    slots = _device_sets(max_parallel, devices_per_job)
    todo, skipped = [], []
    for job in jobs:
        if status_lib.job_state(config, job).state == status_lib.DONE:
            skipped.append(job.index)
        else:
            todo.append(job)
    if skipped:
        write(f'sweep: {len(skipped)} of {len(jobs)} jobs already finished; skipping them.')
    os.makedirs(os.path.join(config.state_dir, 'logs'), exist_ok=True)
    free = list(range(len(slots)))
    active: Dict[int, tuple] = {}  # job index -> (process, slot, log file, start time)
    codes: Dict[int, int] = {}
    walls: Dict[int, float] = {}
    queue = list(todo)
    while queue or active:
        while queue and free:
            job, slot = queue.pop(0), free.pop(0)
            job_env = dict(os.environ if env is None else env)
            if slots[slot] is not None:
                job_env['CUDA_VISIBLE_DEVICES'] = slots[slot]
            log = open(job.log_path(config), 'a')  # noqa: SIM115 (closed when the job ends)
            proc = subprocess.Popen(job_command(job, devices_per_job), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=job_env)
            active[job.index] = (proc, slot, log, time.monotonic(), job)
        time.sleep(0.05)
        for index, (proc, slot, log, t0, job) in list(active.items()):
            code = proc.poll()
            if code is None:
                continue
            walls[index] = time.monotonic() - t0
            codes[index] = code
            log.close()
            free.append(slot)
            del active[index]
            state = status_lib.job_state(config, job)
            write(f'[{len(codes)}/{len(todo)}] {job.name}: {state.outcome or state.state} '
                  f'(exit {code}, {walls[index]:.1f}s; log {job.log_path(config)})')
    return LocalReport([j.index for j in todo], skipped, codes, time.monotonic() - start, walls)
