"""The SLURM executor: one job array, one array task per trial, launched with torchrun.

The array is a generated `sbatch` script (`<root>/.sweep/sweep.sbatch`, kept for inspection and
re-submission). Each task runs `algoperf sweep task --index $SLURM_ARRAY_TASK_ID`, which reads the
job list and `exec`s `algoperf run` (through torchrun over the node's GPUs when there are several),
so SLURM's signals reach the trial directly. The script asks for `--requeue` and
`--signal=TERM@<grace>`: on preemption or `scontrol requeue` the trial gets SIGTERM, stops at a safe
point with a checkpoint (exit 143), and the requeued task resumes from it (`--resume_last_run`).
submitit is not used: a plain script is what upstream's own SLURM helpers submit, and it needs
nothing installed on the cluster beyond this package.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from typing import List, Optional, Sequence, Tuple

from algoperf.config import ConfigError
from algoperf.sweep.grid import Job, SweepConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """#SBATCH settings; `extra` lines are copied verbatim (e.g. '--account=abc')."""

    partition: Optional[str] = None
    time: Optional[str] = None  # SLURM time format, e.g. '12:00:00' or '1-00:00:00'.
    gpus_per_node: int = 0
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    max_parallel: Optional[int] = None  # The array's '%N' throttle.
    signal_grace_sec: int = 120  # SIGTERM this long before the time limit (checkpoint, then exit).
    extra: Tuple[str, ...] = ()
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.gpus_per_node < 0:
            raise ConfigError(f'--gpus_per_node must be >= 0, got {self.gpus_per_node}.')
        for line in self.extra:
            if '\n' in line or not line.strip().startswith('--'):
                raise ConfigError(f'--sbatch_extra {line!r}: each extra line must be one `--option[=value]`.')


def read_options_file(path: str) -> dict:
    """A small `key = value` (or JSON) file of SlurmOptions fields; `extra` may repeat."""
    import json  # noqa: PLC0415

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f'--slurm_config={path}: {e.strerror}.') from e
    if text.lstrip().startswith('{'):
        try:
            return json.loads(text)
        except ValueError as e:
            raise ConfigError(f'{path}: invalid JSON ({e}).') from e
    out: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        if '=' not in line:
            raise ConfigError(f'{path}:{n}: expected `key = value`, got {line!r}.')
        key, value = (s.strip() for s in line.split('=', 1))
        if key not in {f.name for f in dataclasses.fields(SlurmOptions)}:
            raise ConfigError(f'{path}:{n}: unknown key {key!r}.')
        if key == 'extra':
            out.setdefault('extra', []).append(value)
        else:
            out[key] = int(value) if value.isdigit() else value
    return out


def sbatch_script(config: SweepConfig, jobs: Sequence[Job], jobs_file: str, opts: SlurmOptions) -> str:
    n = len(jobs)
    array = f'0-{n - 1}' + (f'%{opts.max_parallel}' if opts.max_parallel else '')
    lines = [
        '#!/bin/bash',
        f'#SBATCH --job-name=algoperf-{config.submission_name}',
        f'#SBATCH --array={array}',
        f'#SBATCH --output={config.state_dir}/logs/job_%a.log',
        '#SBATCH --open-mode=append',  # A requeued task appends to its log.
        '#SBATCH --requeue',
        f'#SBATCH --signal=TERM@{opts.signal_grace_sec}',
        '#SBATCH --nodes=1',
        '#SBATCH --ntasks-per-node=1',
    ]
    if opts.partition:
        lines.append(f'#SBATCH --partition={opts.partition}')
    if opts.time:
        lines.append(f'#SBATCH --time={opts.time}')
    if opts.gpus_per_node:
        lines.append(f'#SBATCH --gpus-per-node={opts.gpus_per_node}')
    if opts.cpus_per_task:
        lines.append(f'#SBATCH --cpus-per-task={opts.cpus_per_task}')
    if opts.mem:
        lines.append(f'#SBATCH --mem={opts.mem}')
    lines += [f'#SBATCH {line.strip()}' for line in opts.extra]
    task = [opts.python, '-m', 'algoperf', 'sweep', 'task', f'--jobs={jobs_file}',
            f'--gpus_per_node={opts.gpus_per_node}']
    lines += [
        '',
        f'cd {shlex.quote(os.getcwd())}',
        'echo "[sweep] array task ${SLURM_ARRAY_TASK_ID} start ${SLURM_RESTART_COUNT:-0} on $(hostname) at $(date +%s.%N)"',
        'exec ' + ' '.join(shlex.quote(a) for a in task) + ' --index="${SLURM_ARRAY_TASK_ID}"',
        '',
    ]
    return '\n'.join(lines)


def submit(config: SweepConfig, jobs: Sequence[Job], jobs_file: str, opts: SlurmOptions,
           indices: Optional[Sequence[int]] = None) -> str:
    """Write the script, `sbatch` it, record the job id; returns the id."""
    if shutil.which('sbatch') is None:
        raise ConfigError('--executor=slurm: `sbatch` is not on PATH (is this a SLURM login node?).')
    os.makedirs(os.path.join(config.state_dir, 'logs'), exist_ok=True)
    script = os.path.join(config.state_dir, 'sweep.sbatch')
    with open(script, 'w') as f:
        f.write(sbatch_script(config, jobs, jobs_file, opts))
    cmd = ['sbatch', '--parsable']
    if indices is not None:
        # Only the jobs not yet done: an explicit index list overrides the script's range.
        cmd.append('--array=' + ','.join(str(i) for i in indices)
                   + (f'%{opts.max_parallel}' if opts.max_parallel else ''))
    proc = subprocess.run(cmd + [script], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f'sbatch {script}: {proc.stderr.strip() or proc.stdout.strip()}')
    job_id = proc.stdout.strip().split(';')[0]
    with open(os.path.join(config.state_dir, 'slurm_job_id'), 'w') as f:
        f.write(job_id + '\n')
    return job_id


def task_command(job: Job, gpus_per_node: int, python: str = sys.executable) -> List[str]:
    """What one array task execs: torchrun over the node's GPUs, or a single process."""
    if gpus_per_node > 1:
        return [python, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={gpus_per_node}',
                '-m', 'algoperf', 'run', *job.argv]
    return [python, '-m', 'algoperf', 'run', *job.argv]


def exec_task(jobs: Sequence[Job], index: int, gpus_per_node: int) -> None:
    """Replace this process with the trial of array task `index` (never returns)."""
    by_index = {j.index: j for j in jobs}
    if index not in by_index:
        raise ConfigError(f'--index={index}: the job list has indices 0..{len(jobs) - 1}.')
    cmd = task_command(by_index[index], gpus_per_node)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
