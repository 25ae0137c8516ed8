"""`algoperf run`: validate everything, then run the trials of one workload.

Order matters for "nothing half-written": the workload name, submission,
search space, batch sizes and data directory are all checked before the
experiment directory is created. Then each trial gets its directory, its
hyperparameters (hparams.json) and its own seed, runs, and leaves a
result.json; a trial that diverges or raises does not stop the others.

Seeds (a documented fix of upstream): upstream gives every trial of one
invocation the same seed. Here trial 1 uses the base seed (so a single-trial
run seeds exactly like upstream) and trial k > 1 a seed derived from
(base seed, k). The base seed is `--rng_seed` or, if unset, drawn once from
os.urandom on rank 0 and broadcast; it also seeds the Halton search.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import logging
import os
import shutil
import struct
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from algoperf import random_utils as prng
from algoperf import registry, search_space
from algoperf import submission as submission_lib
from algoperf.config import ConfigError, RunConfig
from algoperf.profiler import PassThroughProfiler, Profiler
from algoperf.progress import Progress
from algoperf.runtime import Runtime
from algoperf.timing import Clock

_log = logging.getLogger(__name__)

FAILED = 'failed'


@dataclasses.dataclass
class TrialResult:
    """What result.json records for one trial."""

    trial: int
    trial_dir: str
    status: str
    rng_seed: int
    hyperparameters: Optional[Dict[str, Any]]
    global_step: int = 0
    accumulated_submission_time: float = 0.0
    validation_goal_reached: bool = False
    test_goal_reached: bool = False
    time_to_validation_target: Optional[float] = None
    num_evals: int = 0
    preemption_count: int = 0
    wall_time_sec: float = 0.0
    error: Optional[str] = None


def trial_seed(base_seed: int, trial: int) -> int:
    """Seed of trial `trial` (1-based): the base seed for trial 1, else derived."""
    if trial == 1:
        return base_seed
    state = np.random.SeedSequence([base_seed % 2**63, trial]).generate_state(1, dtype=np.uint32)
    return int(state[0]) % (2**31 - 1)


def _draw_base_seed(runtime: Runtime) -> int:
    seed = struct.unpack('I', os.urandom(4))[0] % (2**31 - 1) if runtime.is_main else None
    return runtime.broadcast_object(seed)


def experiment_log_dir(config: RunConfig, workload_name: str) -> str:
    """<experiment_dir>/<experiment_name>/<workload>_pytorch (upstream layout)."""
    root = os.path.abspath(os.path.expanduser(config.experiment_dir))
    name = config.experiment_name
    if config.append_timestamp:
        stamp = datetime.datetime.now().strftime('-%Y-%m-%d-%H-%M-%S')
        name = (name or 'experiment') + stamp
    parts = [root] + ([name] if name else []) + [f'{workload_name}_{config.framework}']
    return os.path.join(*parts)


def _prepare_log_dir(path: str, config: RunConfig, runtime: Runtime) -> None:
    if os.path.exists(path) and not config.resume_last_run:
        if config.overwrite:
            _log.info('Removing existing experiment directory %s (--overwrite).', path)
            if runtime.is_main:
                shutil.rmtree(path)
        elif runtime.world_size == 1 and sys.stdin is not None and sys.stdin.isatty():
            answer = input(f'Found existing experiment dir {path}. Resume training from it? [y/N]: ')
            if answer.strip().lower() != 'y':
                raise ConfigError(f'{path} exists; not resuming. Pass --overwrite to replace it.')
        else:
            raise ConfigError(
                f'experiment directory {path} already exists: pass --resume_last_run to continue it '
                'or --overwrite to replace it.'
            )
    runtime.barrier()
    if runtime.is_main:
        os.makedirs(path, exist_ok=True)
    runtime.barrier()


def _workload_kwargs(config: RunConfig, runtime: Runtime) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {'runtime': runtime}
    if config.librispeech_tokenizer_vocab_path:
        kwargs['tokenizer_vocab_path'] = config.librispeech_tokenizer_vocab_path
    return kwargs


def _check_divisible(flag: str, value: int, runtime: Runtime) -> None:
    if value < 1:
        raise ConfigError(f'{flag} must be positive, got {value}.')
    if value % runtime.world_size:
        raise ConfigError(
            f'{flag} {value} is not divisible by the world size {runtime.world_size} '
            f'(the number of processes torchrun started).'
        )


class Experiment:
    """Everything validated for one `algoperf run`, ready to run trials."""

    def __init__(self, config: RunConfig, runtime: Runtime, progress: Progress) -> None:
        self.config = config
        self.runtime = runtime
        self.progress = progress
        self.spec = registry.get_spec(config.workload)
        self.submission = submission_lib.load(config.submission_path)
        self.space = search_space.load(config.tuning_search_space) if config.tuning_search_space else None
        # Instantiating the workload checks its optional dependencies early.
        probe = registry.get_workload(config.workload, **_workload_kwargs(config, runtime))
        check_data = getattr(probe, 'validate_data_dir', None)
        if check_data is not None:
            check_data(os.path.expanduser(config.data_dir))
        self.global_batch_size = self.submission.batch_size(config.workload, self.spec.base_workload)
        _check_divisible(f'get_batch_size({config.workload!r}) =', self.global_batch_size, runtime)
        if self.submission.get_eval_batch_size is not None:
            self.global_eval_batch_size = self.submission.get_eval_batch_size(config.workload)
        else:
            self.global_eval_batch_size = probe.eval_batch_size
        _check_divisible('eval batch size', self.global_eval_batch_size, runtime)
        self.log_dir = experiment_log_dir(config, config.workload)

    def _trials(self, base_seed: int) -> List[tuple]:
        """(trial number, hyperparameters) for this invocation's slice."""
        cfg = self.config
        if cfg.is_self_tuning:
            return [(1, None)]
        points = self.space.generate(cfg.num_tuning_trials, seed=base_seed)
        indexed = list(enumerate(points))
        sliced = itertools.islice(indexed, cfg.hparam_start_index, cfg.hparam_end_index)
        return [(i + 1, hp) for i, hp in sliced]

    def run(self) -> List[TrialResult]:
        from algoperf import logger_utils  # noqa: PLC0415 (pulls psutil; only when running)
        from algoperf.runner import TrialSetup, train_once  # noqa: PLC0415

        cfg, runtime = self.config, self.runtime
        base_seed = cfg.rng_seed if cfg.rng_seed is not None else _draw_base_seed(runtime)
        trials = self._trials(base_seed)
        _prepare_log_dir(self.log_dir, cfg, runtime)
        results = []
        for trial, hparams in trials:
            trial_dir = os.path.join(self.log_dir, f'trial_{trial}')
            previous = _read_result(trial_dir)
            if previous is not None and previous.status != FAILED and cfg.resume_last_run:
                self.progress.write(f'trial_{trial}: already finished ({previous.status}); skipping.')
                results.append(previous)
                continue
            if runtime.is_main:
                os.makedirs(trial_dir, exist_ok=True)
            runtime.barrier()
            if hparams is not None:
                hparams = logger_utils.write_hparams(hparams, trial_dir, is_main=runtime.is_main)
            seed = trial_seed(base_seed, trial)
            self.progress.start(f'{cfg.workload} trial {trial}/{len(trials)}')
            self.progress.write(f'--- Tuning run {trial}/{cfg.num_tuning_trials} ---' if hparams is not None
                                else f'--- Self-tuning run {trial} ---')
            if hparams is not None:
                self.progress.write(f'Hyperparameters: {dict(hparams._asdict())}')
            profiler = Profiler() if cfg.profile else PassThroughProfiler()
            setup = TrialSetup(
                config=cfg, runtime=runtime, clock=Clock(runtime),
                global_batch_size=self.global_batch_size, global_eval_batch_size=self.global_eval_batch_size,
                trial_dir=trial_dir, profiler=profiler, progress=self.progress,
                compile_model=self.spec.compile_model, compile_loss=self.spec.compile_loss,
                extra_meta_data={'rng_seed': seed, 'search_seed': base_seed},
            )
            result = TrialResult(trial=trial, trial_dir=trial_dir, status=FAILED, rng_seed=seed,
                                 hyperparameters=dict(hparams._asdict()) if hparams is not None else None)
            start = time.monotonic()
            try:
                workload = registry.get_workload(cfg.workload, **_workload_kwargs(cfg, runtime))
                rng, _ = prng.split(prng.PRNGKey(seed), 2)
                outcome = train_once(workload, self.submission, hparams, rng, setup)
                for field in dataclasses.fields(outcome):
                    setattr(result, field.name, getattr(outcome, field.name))
            except Exception as e:  # noqa: BLE001 - a failed trial must not stop the others
                self.progress.close()
                _log.exception('Trial %d failed.', trial)
                result.error = f'{type(e).__name__}: {e}'
            result.wall_time_sec = time.monotonic() - start
            if cfg.profile:
                self.progress.write(f'Profile of trial {trial}:\n{profiler.summary()}')
            if runtime.is_main:
                logger_utils.write_json(os.path.join(trial_dir, 'result.json'), dataclasses.asdict(result))
            self.progress.write(_describe(result, self.spec))
            results.append(result)
        return results


def _read_result(trial_dir: str) -> Optional[TrialResult]:
    path = os.path.join(trial_dir, 'result.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return TrialResult(**json.load(f))


def _describe(r: TrialResult, spec) -> str:
    ttt = f'{r.time_to_validation_target:.2f}s' if r.time_to_validation_target is not None else 'not reached'
    line = (f'trial_{r.trial}: {r.status} after {r.global_step} steps, '
            f'{r.accumulated_submission_time:.2f}s submission time '
            f'(budget {spec.runtime_budget_sec("self" if r.hyperparameters is None else "external"):.0f}s); '
            f'validation target {spec.validation_target_value}: {ttt}')
    if r.error:
        line += f'; error: {r.error}'
    return line
