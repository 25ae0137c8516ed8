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
os.urandom on rank 0 and broadcast; it also seeds the Halton search. A resumed
experiment without `--rng_seed` reuses the base seed it recorded
(meta_data_0.json 'search_seed'), so its trials keep their seeds and points.

Reliability (issue 18): a resume is refused, naming what changed, when the
submission, seed or search space differ from the recorded flags_0.json /
hparams.json (unless --resume_anyway); --experiment_name cannot leave
--experiment_dir; --overwrite never deletes through a symlink. SIGTERM/SIGINT
end the running trial after its current step with a checkpoint (exit 143/130).
Under torchrun a failing rank publishes its error so every rank records it
(runtime.publish_failure); the group is then gone, so later trials are not run.
result.json is written atomically; a failure to write it is one line and exit 1.

Timing hygiene (issue 16): torch's intra-op threads are set before the submission
and workload are built (--num_threads; 0 = auto, runtime.choose_num_threads), and
recorded with the CPU model, core counts and the load average at trial start in
meta_data_<n>.json (`torch_num_threads`, `torch_num_threads_source`,
`cpu_count_logical|physical|usable`, `load_average_start`); result.json adds the
threads and the load average at trial start and end (`load_average_start`,
`load_average_end`: 1, 5, 15 minutes). A 1-minute load above the logical core
count at either point is one warning line on stderr.

Terminal: `--- Tuning run i/n ---` and the progress label count the trials of the
whole study (a list-valued space caps them, said once); after the last trial a
table lists every trial of this invocation (status, steps, submission time, time
to target, error). --quiet keeps only the summary lines, that table, warnings
and errors.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import signal
import struct
import time
from typing import Any, Dict, List, Optional

import numpy as np

from algoperf import benchmark_versions
from algoperf import random_utils as prng
from algoperf import experiment_dir, registry, search_space
from algoperf import runtime as runtime_lib
from algoperf import submission as submission_lib
from algoperf.config import ConfigError, RunConfig
from algoperf.errors import DataError, UserError
from algoperf.profiler import PassThroughProfiler, Profiler
from algoperf.progress import Progress
from algoperf.runtime import Runtime, is_communication_error
from algoperf.timing import Clock

_log = logging.getLogger(__name__)

FAILED = 'failed'
INTERRUPTED = 'interrupted'
# Statuses a resumed experiment runs again.
_UNFINISHED = (FAILED, INTERRUPTED)
# How long a failed rank waits for the others to record its error before exiting
# (torchrun stops every worker once one exits).
_ACK_TIMEOUT_S = 60.0
_ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


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
    global_batch_size: Optional[int] = None
    # The workload name get_batch_size answered for, when not this workload's own
    # (its base workload, or the upstream one a dev workload stands in for).
    batch_size_asked_as: Optional[str] = None
    # Timing hygiene: torch intra-op threads, and the system load average (1, 5, 15 min)
    # when the trial started and ended (meta_data_<n>.json has the start and the CPU).
    torch_num_threads: Optional[int] = None
    load_average_start: Optional[List[float]] = None
    load_average_end: Optional[List[float]] = None


experiment_log_dir = experiment_dir.experiment_log_dir  # Its old home; kept for importers.


def trial_seed(base_seed: int, trial: int) -> int:
    """Seed of trial `trial` (1-based): the base seed for trial 1, else derived."""
    if trial == 1:
        return base_seed
    state = np.random.SeedSequence([base_seed % 2**63, trial]).generate_state(1, dtype=np.uint32)
    return int(state[0]) % (2**31 - 1)


def _draw_base_seed(runtime: Runtime) -> int:
    seed = struct.unpack('I', os.urandom(4))[0] % (2**31 - 1) if runtime.is_main else None
    return runtime.broadcast_object(seed)










def _read_result(trial_dir: str) -> Optional[TrialResult]:
    path = os.path.join(trial_dir, 'result.json')
    if not os.path.exists(path):
        return None
    raw = experiment_dir.read_json(path)
    known = {f.name for f in dataclasses.fields(TrialResult)}
    try:
        return TrialResult(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, AttributeError) as e:
        raise ConfigError(f'{path}: not a result.json of algoperf ({e}); fix or delete it to resume.') from None



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
        # Before anything builds tensors or thread pools (the submission, the workload probe).
        requested, self.threads_source = runtime_lib.choose_num_threads(config.num_threads, runtime)
        self.num_threads = runtime_lib.set_num_threads(requested)  # Said in run(): bad input stays one line.
        self.rules = benchmark_versions.get(config.benchmark_version)
        self.spec = benchmark_versions.apply(registry.get_spec(config.workload), self.rules.name)
        self.submission = submission_lib.load(config.submission_path)
        self.space = search_space.load(config.tuning_search_space) if config.tuning_search_space else None
        self._check_hparam_slice()
        # Instantiating the workload checks its optional dependencies early.
        probe = registry.get_workload(config.workload, config.benchmark_version, **_workload_kwargs(config, runtime))
        check_data = getattr(probe, 'validate_data_dir', None)
        if check_data is not None:
            try:
                check_data(os.path.expanduser(config.data_dir))
            except UserError:
                raise
            except (ValueError, PermissionError, IsADirectoryError) as e:
                raise DataError(str(e)) from e  # The data checks name the file in their message.
        self.global_batch_size, asked_as = self.submission.resolve_batch_size(
            config.workload, self.spec.base_workload, self.spec.stands_in_for or None)
        self.batch_size_asked_as = asked_as if asked_as != config.workload else None
        _check_divisible(f'get_batch_size({asked_as!r}) =', self.global_batch_size, runtime)
        eval_batch = self.submission.eval_batch_size(config.workload)
        self.global_eval_batch_size = eval_batch if eval_batch is not None else probe.eval_batch_size
        _check_divisible('eval batch size', self.global_eval_batch_size, runtime)
        self.log_dir = experiment_dir.experiment_log_dir(config, config.workload)
        from algoperf import precision  # noqa: PLC0415 (pulls torch)

        # Before any submission code runs its first step (the submission module is imported,
        # but init_optimizer_state / update_params have not been called).
        self.version_meta_data = precision.apply(self.rules, runtime.device)
        self.interrupted_by: Optional[int] = None  # signal number, once a signal ended the run
        self._last_end_warned = False  # the previous trial ended with a busy-machine line
        self.write_failed = False

    @property
    def study_trials(self) -> int:
        """Trials of the whole study: 1 self-tuning; a list-valued space caps --num_tuning_trials."""
        cfg = self.config
        if cfg.is_self_tuning:
            return 1
        if self.space.points is not None:
            return min(cfg.num_tuning_trials, len(self.space.points))
        return cfg.num_tuning_trials

    def _check_hparam_slice(self) -> None:
        count = self.study_trials
        start = self.config.hparam_start_index or 0
        if start >= count:
            raise ConfigError(
                f'--hparam_start_index={start}: past the last trial (this run has {count} trial(s), '
                f'indices 0..{count - 1}).'
            )

    def _trials(self, base_seed: int) -> List[tuple]:
        """(trial number, hyperparameters) for this invocation's slice."""
        cfg = self.config
        if cfg.is_self_tuning:
            return [(1, None)]
        # Asked for no more points than there are: the capped count is said once, in run().
        points = self.space.generate(self.study_trials, seed=base_seed)
        indexed = list(enumerate(points))
        sliced = itertools.islice(indexed, cfg.hparam_start_index, cfg.hparam_end_index)
        return [(i + 1, hp) for i, hp in sliced]

    def _base_seed(self, resuming: bool) -> int:
        cfg, runtime = self.config, self.runtime
        if cfg.rng_seed is not None:
            return cfg.rng_seed
        if resuming:
            recorded = experiment_dir.recorded_base_seed(self.log_dir) if runtime.is_main else None
            recorded = runtime.broadcast_object(recorded)
            if recorded is not None:
                _log.info('Resuming with the recorded base seed %d (no --rng_seed given).', recorded)
                return recorded
        return _draw_base_seed(runtime)

    def _check_resume(self, trials: List[tuple]) -> None:
        changes = []
        for trial, hparams in trials:
            trial_dir = os.path.join(self.log_dir, f'trial_{trial}')
            if os.path.isdir(trial_dir):
                found = experiment_dir.resume_changes(self.config, trial_dir, hparams)
                changes += [c for c in found if c not in changes]
        if changes:
            raise ConfigError(
                f'{self.log_dir}: resuming with other settings than the experiment was started with: '
                f'{"; ".join(changes)}. Pass --resume_anyway to continue regardless, or use another '
                '--experiment_name.'
            )

    def run(self) -> List[TrialResult]:
        from algoperf.runner import StopFlag  # noqa: PLC0415 (pulls torch; only when running)

        cfg, runtime = self.config, self.runtime
        resuming = experiment_dir.decide_resume(self.log_dir, cfg, runtime)
        base_seed = self._base_seed(resuming)
        trials = self._trials(base_seed)
        if resuming:
            for trial, _ in trials:  # A corrupt result.json is named before anything runs.
                _read_result(os.path.join(self.log_dir, f'trial_{trial}'))
            if not cfg.resume_anyway:
                self._check_resume(trials)
        experiment_dir.prepare_log_dir(self.log_dir, cfg, runtime, resuming)
        _log.info('Torch intra-op threads: %d (%s).', self.num_threads, self.threads_source)
        if not cfg.is_self_tuning and self.study_trials != cfg.num_tuning_trials:
            sliced = (f' (this invocation: trial(s) {trials[0][0]}-{trials[-1][0]})'
                      if trials and len(trials) < self.study_trials else '')
            self._say(f'{cfg.tuning_search_space}: search space lists {self.study_trials} points; running '
                      f'{self.study_trials} trials, not {cfg.num_tuning_trials} (--num_tuning_trials){sliced}.')
        results: List[TrialResult] = []
        stop = StopFlag()
        with experiment_dir.stop_on_signals(stop):
            for index, (trial, hparams) in enumerate(trials):
                if stop.requested:
                    self.interrupted_by = stop.signum
                    self._say(f'{signal.Signals(stop.signum).name}: not starting trial_{trial}.')
                    break
                result, group_broken = self._run_one(trial, hparams, base_seed, self.study_trials, stop)
                if result is not None:
                    results.append(result)
                if result is not None and result.status == INTERRUPTED:
                    self.interrupted_by = stop.signum
                    break
                if group_broken:
                    rest = [f'trial_{t}' for t, _ in trials[index + 1:]]
                    if rest:
                        self._say(f'Not running {", ".join(rest)}: the process group is unusable after the '
                                  'failure above; rerun them with --resume_last_run.')
                    break
        if results:
            self._say(results_table(results))
        return results

    def exit_code(self, results: List[TrialResult]) -> int:
        """0, 1 (a trial failed or result.json could not be written) or 128+signal (interrupted)."""
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        return 1 if self.write_failed or any(r.status == FAILED for r in results) else 0

    def _say(self, line: str) -> None:
        if self.runtime.is_main:
            self.progress.write(line)

    def _warn_if_busy(self, what: str, load, say: bool = True) -> bool:
        """Whether the machine was busier than its cores; one warning line if `say`."""
        line = runtime_lib.busy_machine_warning(what, load)
        if line is not None and say:
            _log.warning('%s', line)
        return line is not None

    def _run_one(self, trial: int, hparams, base_seed: int, num_trials: int, stop):
        """Run one trial; returns (its TrialResult or None if skipped unrecorded, group broken)."""
        from algoperf import checkpoint_utils, logger_utils  # noqa: PLC0415 (psutil, torch)
        from algoperf.runner import TrialSetup, run_trial  # noqa: PLC0415

        cfg, runtime = self.config, self.runtime
        trial_dir = os.path.join(self.log_dir, f'trial_{trial}')
        previous = _read_result(trial_dir)
        if previous is not None and previous.status not in _UNFINISHED and cfg.resume_last_run:
            self._say(f'trial_{trial}: already finished ({previous.status}); skipping.')
            return previous, False
        with experiment_dir.file_errors_as_user_errors(trial_dir):
            if runtime.is_main:
                os.makedirs(trial_dir, exist_ok=True)
                checkpoint_utils.remove_temp_files(trial_dir)
            runtime.barrier()
            if hparams is not None:
                hparams = logger_utils.write_hparams(hparams, trial_dir, is_main=runtime.is_main)
        seed = trial_seed(base_seed, trial)
        self.progress.start(f'{cfg.workload} trial {trial}/{num_trials}', max_steps=cfg.max_global_steps)
        if runtime.is_main:
            self.progress.note(f'--- Tuning run {trial}/{num_trials} ---' if hparams is not None
                               else f'--- Self-tuning run {trial} ---')
            if hparams is not None:
                self.progress.note(f'Hyperparameters: {dict(hparams._asdict())}')
        load_start = runtime_lib.load_average()
        # At most one busy-machine line per trial, at its start or else its end; a start right
        # after the previous trial's end line (the same moment) counts as said.
        busy_start = self._warn_if_busy(f'trial_{trial} start', load_start, say=not self._last_end_warned)
        host = {**runtime_lib.cpu_facts(), 'torch_num_threads': self.num_threads,
                'torch_num_threads_source': self.threads_source, 'load_average_start': load_start}
        profiler = Profiler() if cfg.profile else PassThroughProfiler()
        setup = TrialSetup(
            config=cfg, runtime=runtime, clock=Clock(runtime),
            global_batch_size=self.global_batch_size, global_eval_batch_size=self.global_eval_batch_size,
            trial_dir=trial_dir, profiler=profiler, progress=self.progress,
            compile_model=self.spec.compile_model, compile_loss=self.spec.compile_loss,
            extra_meta_data={'rng_seed': seed, 'search_seed': base_seed, **self.version_meta_data, **host},
            stop=stop,
        )
        result = TrialResult(trial=trial, trial_dir=trial_dir, status=FAILED, rng_seed=seed,
                             hyperparameters=dict(hparams._asdict()) if hparams is not None else None,
                             global_batch_size=self.global_batch_size, batch_size_asked_as=self.batch_size_asked_as,
                             torch_num_threads=self.num_threads, load_average_start=load_start)
        start = time.monotonic()
        workload = registry.get_workload(cfg.workload, cfg.benchmark_version, **_workload_kwargs(cfg, runtime))
        rng, _ = prng.split(prng.PRNGKey(seed), 2)
        outcome, error, checkpoint = run_trial(workload, self.submission, hparams, rng, setup)
        for field in dataclasses.fields(outcome):
            setattr(result, field.name, getattr(outcome, field.name))
        result.wall_time_sec = time.monotonic() - start
        result.load_average_end = runtime_lib.load_average()
        self._last_end_warned = not busy_start and self._warn_if_busy(f'trial_{trial} end', result.load_average_end)
        published = group_broken = False
        if error is not None:
            result.error, published = self._record_failure(trial, error)
            group_broken = runtime.distributed
            if isinstance(error, UserError) and not group_broken:
                raise error  # Bad input found in the trial (a refused checkpoint, bad data): one line, exit 2.
        if cfg.profile:
            self._say(f'Profile of trial {trial}:\n{profiler.summary()}')
        if runtime.is_main:
            path = os.path.join(trial_dir, 'result.json')
            try:
                logger_utils.write_json(path, dataclasses.asdict(result))
            except OSError as e:
                self.write_failed = True
                self.progress.write(f'trial_{trial}: could not write {path} ({e.strerror or e}); '
                                    f'the trial ended {result.status} after {result.global_step} steps.')
        if error is not None and runtime.distributed:
            if published:
                runtime.wait_for_acknowledgements(_ACK_TIMEOUT_S)
            else:
                runtime.acknowledge_failure()
        self._say(_describe(result, self.spec))  # Rank 0 only: under DDP it holds every rank's error.
        if result.status == INTERRUPTED:
            name = signal.Signals(stop.signum).name
            where = f'checkpoint {checkpoint}' if checkpoint else 'no checkpoint (--save_checkpoints=false)'
            self._say(f'{name}: trial_{trial} stopped after step {result.global_step}; {where}; '
                      'continue with --resume_last_run.')
        if error is not None and isinstance(error, UserError):
            raise error
        return result, group_broken

    def _record_failure(self, trial: int, error: Exception):
        """The error text for result.json; under DDP, the failing rank's. Returns (text, published)."""
        runtime = self.runtime
        own = f'{type(error).__name__}: {error}'
        if not runtime.distributed:
            if isinstance(error, UserError):
                return own, False
            # A full or read-only disk is the machine's state, not a bug: no traceback.
            quiet = isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS
            _log.error('Trial %d failed%s', trial, f': {own}' if quiet else '.', exc_info=None if quiet else error)
            return own, False
        if is_communication_error(error):
            # Wait a little: a peer that raised wrote its error before tearing its group down.
            peers = runtime.peer_failures(wait_s=5.0)
            if peers:
                _log.error('Trial %d failed on another rank: %s', trial, peers[0])
                return peers[0], False
        text = f'rank {runtime.rank}: {own}'
        if not isinstance(error, UserError):
            _log.error('Trial %d failed on rank %d.', trial, runtime.rank, exc_info=error)
        runtime.publish_failure(text)
        return text, True


def _describe(r: TrialResult, spec) -> str:
    ttt = f'{r.time_to_validation_target:.2f}s' if r.time_to_validation_target is not None else 'not reached'
    line = (f'trial_{r.trial}: {r.status} after {r.global_step} steps, '
            f'{r.accumulated_submission_time:.2f}s submission time '
            f'(budget {spec.runtime_budget_sec("self" if r.hyperparameters is None else "external"):.0f}s); '
            f'validation target {spec.validation_target_value}: {ttt}')
    if r.batch_size_asked_as:
        line += f'; batch size {r.global_batch_size} from get_batch_size({r.batch_size_asked_as!r})'
    if r.error:
        line += f'; error: {r.error}'
    return line


def _cell(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:,.2f}'


def results_table(results: List[TrialResult], error_width: int = 60) -> str:
    """The end-of-run table: one row per trial of this invocation (errors shortened; result.json has them)."""
    lines = [f'{"trial":<7}{"status":<18}{"steps":>8}{"submission s":>14}{"to target s":>13}  error']
    for r in results:
        error = ' '.join((r.error or '').split())
        if len(error) > error_width:
            error = error[:error_width - 1] + '…'
        lines.append(f'{r.trial:<7}{r.status:<18}{r.global_step:>8,}{_cell(r.accumulated_submission_time):>14}'
                     f'{_cell(r.time_to_validation_target):>13}  {error}'.rstrip())
    return '\n'.join(lines)
