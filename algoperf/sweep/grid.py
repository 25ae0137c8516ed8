"""A study grid expanded into jobs, with upstream's job-config semantics.

Upstream (`scoring/utils/slurm/make_job_config.py`) makes one job per workload x study x hparam
index: `experiment_dir=<dir>/study_<k>`, `hparam_start_index=j`, `hparam_end_index=j+1`,
`num_tuning_trials` = 5 (external) or 1 (self), and a seed per job. The resulting tree is
`<dir>/<submission>/study_<k>/<workload>_pytorch/trial_<j+1>`, which `algoperf score` and
upstream's scorer read.

Seeds, where we differ on purpose: upstream folds `hash(workload)` into the key, and Python's
`hash(str)` changes with every interpreter (PYTHONHASHSEED), so its seeds are not reproducible;
and it gives each job of a study its own seed, while this harness also seeds the Halton search
with `--rng_seed`. Here each (workload, study) gets one *study seed* from
SeedSequence([sweep seed, crc32(workload), study]); every job of the study passes it as
`--rng_seed` with its own hparam slice. So job j samples point j of the *same* Halton set, and
its trial seed is `trial_seed(study seed, j+1)`: exactly what one `algoperf run` of the whole
study would do (algoperf/experiment.py). Self-tuning: one job per (workload, study).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """What a sweep runs: one submission over workloads x studies x trials."""

    submission_path: str
    experiment_dir: str
    submission_name: str
    tuning_ruleset: str = 'external'
    tuning_search_space: Optional[str] = None
    workloads: Tuple[str, ...] = ()
    num_studies: int = 3
    num_tuning_trials: int = 5
    seed: int = 0
    benchmark_version: Optional[str] = None
    run_flags: Tuple[str, ...] = ()  # Passed through to every `algoperf run` (e.g. --data_dir=...).

    def __post_init__(self) -> None:
        from algoperf.config import ConfigError  # noqa: PLC0415

        if self.tuning_ruleset not in ('external', 'self'):
            raise ConfigError(f"--tuning_ruleset must be 'external' or 'self', got {self.tuning_ruleset!r}.")
        if self.tuning_ruleset == 'external' and not self.tuning_search_space:
            raise ConfigError('--tuning_search_space is required for the external tuning ruleset.')
        if self.tuning_ruleset == 'self' and self.tuning_search_space:
            raise ConfigError('--tuning_search_space is not allowed with --tuning_ruleset=self.')
        for flag in ('num_studies', 'num_tuning_trials'):
            if getattr(self, flag) < 1:
                raise ConfigError(f'--{flag} must be at least 1, got {getattr(self, flag)}.')
        if not self.workloads:
            raise ConfigError('--workloads: no workloads to run.')
        name = self.submission_name
        if not name or name in ('.', '..') or os.sep in name or name.startswith('.'):
            raise ConfigError(f'--submission_name={name!r}: must be a plain directory name.')

    @property
    def trials_per_study(self) -> int:
        return self.num_tuning_trials if self.tuning_ruleset == 'external' else 1

    @property
    def root(self) -> str:
        """<experiment_dir>/<submission>: what `algoperf score --submission_directory` takes the parent of."""
        return os.path.join(os.path.abspath(os.path.expanduser(self.experiment_dir)), self.submission_name)

    @property
    def state_dir(self) -> str:
        """Job list, scripts and per-job logs (hidden: scorers skip dot-directories)."""
        return os.path.join(self.root, '.sweep')


@dataclasses.dataclass(frozen=True)
class Job:
    """One `algoperf run` invocation: one trial (external) or one study's run (self)."""

    index: int
    workload: str
    study: int
    hparam_index: int  # 0-based; trial directory trial_<hparam_index + 1>.
    study_seed: int
    argv: Tuple[str, ...]  # Arguments after `python -m algoperf run`.

    @property
    def name(self) -> str:
        return f'{self.workload}/study_{self.study}/trial_{self.hparam_index + 1}'

    def trial_dir(self, config: SweepConfig) -> str:
        return os.path.join(config.root, f'study_{self.study}', f'{self.workload}_pytorch',
                            f'trial_{self.hparam_index + 1}')

    def log_path(self, config: SweepConfig) -> str:
        return os.path.join(config.state_dir, 'logs', f'job_{self.index}.log')


def study_seed(seed: int, workload: str, study: int) -> int:
    """Reproducible per-(workload, study) seed (crc32, not the per-process `hash`)."""
    entropy = [seed % 2**63, zlib.crc32(workload.encode()), study]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0]) % (2**31 - 1)


def expand(config: SweepConfig) -> List[Job]:
    """Jobs in upstream's order: workload, then study, then hparam index."""
    jobs = []
    for workload in config.workloads:
        for study in range(config.num_studies):
            seed = study_seed(config.seed, workload, study)
            for j in range(config.trials_per_study):
                argv = [
                    f'--workload={workload}',
                    f'--submission_path={os.path.abspath(config.submission_path)}',
                    f'--experiment_dir={os.path.abspath(os.path.expanduser(config.experiment_dir))}',
                    f'--experiment_name={config.submission_name}/study_{study}',
                    f'--tuning_ruleset={config.tuning_ruleset}',
                    f'--rng_seed={seed}',
                    # Re-running a sweep skips finished trials and resumes interrupted ones;
                    # several jobs share one <workload>_pytorch directory.
                    '--resume_last_run',
                ]
                if config.tuning_ruleset == 'external':
                    argv += [f'--tuning_search_space={os.path.abspath(config.tuning_search_space)}',
                             f'--num_tuning_trials={config.num_tuning_trials}',
                             f'--hparam_start_index={j}', f'--hparam_end_index={j + 1}']
                if config.benchmark_version:
                    argv.append(f'--benchmark_version={config.benchmark_version}')
                argv += list(config.run_flags)
                jobs.append(Job(len(jobs), workload, study, j, seed, tuple(argv)))
    return jobs


def write_job_list(config: SweepConfig, jobs: Sequence[Job]) -> str:
    """`<root>/.sweep/jobs.json`: upstream's config.json shape ({"0": {...}, ...}) plus our argv."""
    os.makedirs(config.state_dir, exist_ok=True)
    payload: Dict[str, Any] = {
        'config': {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
        'jobs': {
            str(j.index): {
                'framework': 'pytorch', 'workload': j.workload, 'study': j.study,
                'experiment_dir': os.path.join(config.root, f'study_{j.study}'),
                'hparam_start_index': j.hparam_index, 'hparam_end_index': j.hparam_index + 1,
                'rng_seed': j.study_seed, 'num_tuning_trials': config.trials_per_study,
                'trial_dir': j.trial_dir(config), 'argv': list(j.argv),
            }
            for j in jobs
        },
    }
    path = os.path.join(config.state_dir, 'jobs.json')
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)
    return path


def read_job_list(path: str) -> Tuple[SweepConfig, List[Job]]:
    """The config and jobs a sweep wrote (for status, score and SLURM array tasks)."""
    from algoperf.config import ConfigError  # noqa: PLC0415

    try:
        with open(path) as f:
            payload = json.load(f)
        raw = payload['config']
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        config = SweepConfig(**raw)
        jobs = [Job(int(i), e['workload'], e['study'], e['hparam_start_index'], e['rng_seed'], tuple(e['argv']))
                for i, e in sorted(payload['jobs'].items(), key=lambda kv: int(kv[0]))]
    except FileNotFoundError as e:
        raise ConfigError(f'{path}: no sweep here (jobs.json not found); start one with `algoperf sweep run`.') from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f'{path}: not a readable sweep job list ({type(e).__name__}: {e}).') from e
    return config, jobs
