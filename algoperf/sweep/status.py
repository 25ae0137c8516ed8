"""Where each job of a sweep stands, read from the log tree and (for SLURM) the scheduler.

A job's trial directory says most of it:
  * `result.json` with any status but 'failed' or 'interrupted' -> done (the status is the
    trial's outcome);
  * `result.json` with status 'failed'          -> failed (its error is shown);
  * `result.json` with status 'interrupted' (SIGTERM/SIGINT: preempted, requeued, Ctrl-C) ->
    running if the scheduler says so (a requeued task), else interrupted;
  * the directory without `result.json`         -> running if the scheduler (or the local
    executor) says so, else interrupted (a re-run resumes it from its last checkpoint);
  * no directory                                 -> pending (queued in SLURM, or not started).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import subprocess
from typing import Dict, Iterable, List, Optional, Sequence, Set

from algoperf.sweep.grid import Job, SweepConfig

DONE, FAILED, RUNNING, INTERRUPTED, PENDING = 'done', 'failed', 'running', 'interrupted', 'pending'
STATES = (DONE, RUNNING, INTERRUPTED, FAILED, PENDING)


@dataclasses.dataclass(frozen=True)
class JobState:
    job: Job
    state: str
    outcome: Optional[str] = None  # The trial's status in result.json (targets_reached, ...).
    error: Optional[str] = None
    log_path: Optional[str] = None


def _read_result(trial_dir: str) -> Optional[dict]:
    path = os.path.join(trial_dir, 'result.json')
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {'status': 'failed', 'error': f'{path}: unreadable result.json ({e})'}


def job_state(config: SweepConfig, job: Job, running: Set[int] = frozenset()) -> JobState:
    trial_dir = job.trial_dir(config)
    log = job.log_path(config)
    result = _read_result(trial_dir)
    if result is not None and result.get('status') == 'interrupted':
        result = None  # Resumable: classified like a trial directory without a result.
    if result is not None:
        if result.get('status') == 'failed':
            return JobState(job, FAILED, 'failed', result.get('error'), log)
        return JobState(job, DONE, result.get('status'), None, log)
    if job.index in running:
        return JobState(job, RUNNING, log_path=log)
    if os.path.isdir(trial_dir):
        return JobState(job, INTERRUPTED, log_path=log)
    return JobState(job, PENDING, log_path=log)


def slurm_running_tasks(config: SweepConfig) -> Set[int]:
    """Array task ids of this sweep's SLURM job that are RUNNING (empty without squeue)."""
    id_file = os.path.join(config.state_dir, 'slurm_job_id')
    if not os.path.exists(id_file) or shutil.which('squeue') is None:
        return set()
    with open(id_file) as f:
        job_id = f.read().strip()
    try:
        out = subprocess.run(['squeue', '-h', '-r', '-j', job_id, '-o', '%K %T'], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    running = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1] in ('RUNNING', 'COMPLETING'):
            running.add(int(parts[0]))
    return running


def states(config: SweepConfig, jobs: Sequence[Job], running: Iterable[int] = ()) -> List[JobState]:
    running = set(running) | slurm_running_tasks(config)
    return [job_state(config, j, running) for j in jobs]


def table(config: SweepConfig, job_states: Sequence[JobState]) -> str:
    """Counts per workload, one row each, plus a total row."""
    per: Dict[str, collections.Counter] = collections.OrderedDict()
    for s in job_states:
        per.setdefault(s.job.workload, collections.Counter())[s.state] += 1
    width = max([len('workload')] + [len(w) for w in per]) + 2
    lines = [f'{"workload":<{width}}' + ''.join(f'{s:>13}' for s in STATES) + f'{"total":>8}']
    total: collections.Counter = collections.Counter()
    for workload, counts in per.items():
        total.update(counts)
        lines.append(f'{workload:<{width}}' + ''.join(f'{counts[s]:>13}' for s in STATES)
                     + f'{sum(counts.values()):>8}')
    lines.append(f'{"all":<{width}}' + ''.join(f'{total[s]:>13}' for s in STATES) + f'{sum(total.values()):>8}')
    return '\n'.join(lines)


def failures(job_states: Sequence[JobState]) -> List[str]:
    """One line per failed job: its name, error and log file."""
    return [f'{s.job.name}: {s.error or "failed"} (log: {s.log_path})' for s in job_states if s.state == FAILED]
