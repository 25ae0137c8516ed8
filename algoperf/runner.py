"""One timed trial: upstream's `train_once`, with its exact clock (spec §5.4).

On the clock: `data_selection` + `update_params` of every step, measured from
the end of the previous step (or of the previous eval/logging block) to a
synchronised time point right after `update_params`; and `prepare_for_eval`.
Off the clock: model/optimizer/input-queue setup, evals, logging, checkpoints.
The first eval follows step 1; later ones come once `eval_period_time_sec` has
passed since the last eval ended. The budget (1x external, 1.5x self-tuning)
is checked at eval points. Training stops when both targets are reached, the
budget is spent, `--max_global_steps` is hit, the submission raises
`TrainingCompleteError`, or (ours, on by default) an eval turns non-finite.

Differences from upstream, all outside the measured interval: one time point
per step instead of two (the step loop makes no other host sync); CSV rows are
appended instead of rewriting the file; on resume, log rows written after the
restored checkpoint are dropped so none is duplicated.

Ours, for reliability: a SIGTERM/SIGINT (`StopFlag`, set by the experiment's
signal handler) ends the trial after the current step with a checkpoint
(status 'interrupted'; resuming continues it). One process checks the flag
every step (a Python attribute read); under DDP the ranks agree on it at eval
points (one int all-reduce, off the clock), so all stop after the same step.
A trial that raises still reports the steps, evals and time it reached
(`run_trial`); under DDP a collective that fails because a peer is gone is
re-raised from evals instead of being logged and trained past.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
import types
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from algoperf import checkpoint_utils, logger_utils, spec
from algoperf import random_utils as prng
from algoperf.config import RunConfig
from algoperf.profiler import Profiler
from algoperf.progress import Progress, eval_summary
from algoperf.runtime import Runtime, is_communication_error
from algoperf.submission import Submission
from algoperf.timing import Clock

_log = logging.getLogger(__name__)

# Trial outcomes, as written to result.json.
TARGETS_REACHED = 'targets_reached'
BUDGET_EXHAUSTED = 'budget_exhausted'
MAX_STEPS = 'max_global_steps'
TRAINING_COMPLETE = 'training_complete'
DIVERGED = 'diverged'
INTERRUPTED = 'interrupted'  # SIGTERM/SIGINT; resumable (ours)
FAILED = 'failed'


class StopFlag:
    """Set by a signal handler; the step loop ends the trial at the next safe point."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@dataclasses.dataclass
class TrialSetup:
    """What a trial needs besides the workload and the submission."""

    config: RunConfig
    runtime: Runtime
    clock: Clock
    global_batch_size: int
    global_eval_batch_size: int
    trial_dir: Optional[str]
    profiler: Profiler
    progress: Progress
    compile_model: bool = False
    compile_loss: bool = False
    extra_meta_data: Dict[str, Any] = dataclasses.field(default_factory=dict)
    stop: Optional[StopFlag] = None


@dataclasses.dataclass
class TrialOutcome:
    status: str
    global_step: int
    accumulated_submission_time: float
    validation_goal_reached: bool
    test_goal_reached: bool
    time_to_validation_target: Optional[float]
    num_evals: int
    preemption_count: int


def reset_cuda_mem(runtime: Runtime) -> None:
    """Upstream's `_reset_cuda_mem`: free cached memory between phases."""
    if runtime.device.type == 'cuda':
        torch._C._cuda_clearCublasWorkspaces()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _python_scalars(result: Dict[str, Any]) -> Dict[str, Any]:
    """Eval values as Python numbers (weights-only checkpoints, CSV, JSON)."""
    out = {}
    for k, v in result.items():
        if hasattr(v, 'item') and callable(v.item):
            v = v.item()
        out[k] = v
    return out


def _non_finite_metrics(result: Dict[str, Any]) -> List[str]:
    return [
        k for k, v in result.items()
        if isinstance(v, float) and not math.isfinite(v) and k.split('/')[0] in ('train', 'validation', 'test')
    ]


def _keep_row_on_resume(restored_step: int):
    """Rows to keep after restoring a checkpoint at `restored_step`.

    Eval rows up to and including the restored step happened before that
    checkpoint was written; train rows logged *at* the restored step were
    logged by the update that followed it, and will be logged again.
    """

    def keep(row: Dict[str, str]) -> bool:
        step = row.get('global_step')
        if not step:
            return True
        step = float(step)
        if step < restored_step:
            return True
        return step == restored_step and bool(row.get('score')) and any(
            k.startswith('validation/') and row[k] for k in row
        )

    return keep


class _Trial:
    """State and phases of one `train_once` call."""

    def __init__(self, workload, submission: Submission, hyperparameters, rng, setup: TrialSetup):
        self.workload = workload
        self.sub = submission
        self.hp = hyperparameters
        self.rng = rng
        self.s = setup
        self.cfg = setup.config
        # Self-tuning: 1.5x (3x under --benchmark_version=0.5), from the versioned spec.
        factor = getattr(getattr(workload, 'workload_spec', None), 'self_tuning_budget_factor', 1.5)
        self.budget = workload.max_allowed_runtime_sec * (factor if self.cfg.is_self_tuning else 1.0)
        self.is_main = setup.runtime.is_main
        self.logger: Optional[logger_utils.MetricLogger] = None
        self.status: Optional[str] = None
        self.time_to_val_target: Optional[float] = None
        self._checkpointed_step: Optional[int] = None
        self.global_step = 0
        self.eval_results: List[Tuple[int, Dict[str, Any]]] = []
        self.preemption_count = 0
        self.train_state: Dict[str, Any] = {}
        self.checkpoint_path: Optional[str] = None

    # ---- setup (off the clock) ----------------------------------------------------------------
    def setup(self) -> None:
        cfg, wl = self.cfg, self.workload
        reset_cuda_mem(self.s.runtime)
        data_rng, opt_init_rng, model_init_rng, self.rng = prng.split(self.rng, 4)
        if hasattr(wl, '_eval_num_workers'):
            wl.eval_num_workers = cfg.pytorch_eval_num_workers
        with self.s.profiler.profile('Initializing dataset'):
            self.input_queue = wl._build_input_queue(
                data_rng, 'train', data_dir=cfg.data_dir, global_batch_size=self.s.global_batch_size
            )
        with self.s.profiler.profile('Initializing model'):
            self.params, self.model_state = wl.init_model_fn(model_init_rng)
            if cfg.torch_compile and self.s.compile_model:
                _log.info('Compiling the model with torch.compile (compile time is on the clock).')
                self.params = torch.compile(self.params)
            if cfg.torch_compile and self.s.compile_loss:
                wl.loss_fn = torch.compile(wl.loss_fn)
        with self.s.profiler.profile('Initializing optimizer'):
            self.opt_state = self.sub.init_optimizer_state(wl, self.params, self.model_state, self.hp, opt_init_rng)
        self.train_state = {
            'validation_goal_reached': False,
            'test_goal_reached': False,
            'is_time_remaining': True,
            'last_eval_time': 0,
            'training_complete': False,
            'accumulated_submission_time': 0,
            'accumulated_eval_time': 0,
            'accumulated_logging_time': 0,
            'last_step_end_time': None,
        }
        self.global_step = 0
        self.eval_results: List[Tuple[int, Dict[str, Any]]] = []
        self.preemption_count = 0
        if self.s.trial_dir is not None:
            self._restore_and_open_logs()

    def _restore_and_open_logs(self) -> None:
        trial_dir = self.s.trial_dir
        if self.is_main:
            checkpoint_utils.remove_temp_files(trial_dir)
        (
            self.opt_state, self.params, self.model_state, self.train_state,
            self.eval_results, self.global_step, self.preemption_count,
        ) = checkpoint_utils.maybe_restore_checkpoint(
            self.opt_state, self.params, self.model_state, self.train_state, self.eval_results,
            self.global_step, self.preemption_count, checkpoint_dir=trial_dir, device=self.s.runtime.device,
        )
        if self.preemption_count:
            _log.info('Resumed at step %d (preemption %d).', self.global_step, self.preemption_count)
            # Ours: input queues that can skip consumed batches cheaply resume exactly
            # where the interrupted run was (upstream restarts the data stream).
            fast_forward = getattr(self.input_queue, 'fast_forward', None)
            if fast_forward is not None:
                fast_forward(self.global_step)
        self.logger = logger_utils.set_up_loggers(trial_dir, is_main=self.is_main)
        if self.is_main:
            keep = _keep_row_on_resume(self.global_step)
            for log in (self.logger.csv, self.logger.eval_csv):
                if os.path.exists(log.path):
                    log.truncate(keep)
        meta = logger_utils.get_meta_data(self.workload, **self.s.extra_meta_data)
        logger_utils.write_json(os.path.join(trial_dir, f'meta_data_{self.preemption_count}.json'), meta, is_main=self.is_main)
        logger_utils.write_json(os.path.join(trial_dir, f'flags_{self.preemption_count}.json'), self.cfg.as_flags(), is_main=self.is_main)
        if self.is_main:
            self.logger.trackers = self._make_trackers(trial_dir)
        self.workload.attach_metrics_logger(self.logger)

    def _make_trackers(self, trial_dir: str) -> list:
        """TensorBoard / W&B for this trial (rank 0); fed by the logger, off the clock."""
        from algoperf import tracking  # noqa: PLC0415

        cfg = self.cfg
        workload_name = os.path.basename(os.path.dirname(os.path.abspath(trial_dir)))
        group = '/'.join(p for p in (cfg.experiment_name, workload_name) if p)
        run_config = {'flags': cfg.as_flags(), 'hyperparameters': dict(self.hp._asdict()) if self.hp is not None else None}
        return tracking.make_trackers(
            trial_dir=trial_dir, use_tensorboard=cfg.use_tensorboard, use_wandb=cfg.use_wandb, group=group,
            name=os.path.basename(trial_dir), run_config=run_config,
            resumed_step=self.global_step + 1 if self.preemption_count else None)

    # ---- the step loop -------------------------------------------------------------------------
    def _goals_reached(self) -> bool:
        return self.train_state['validation_goal_reached'] and self.train_state['test_goal_reached']

    def run(self) -> TrialOutcome:
        ts, clock, prof = self.train_state, self.s.clock, self.s.profiler
        wl, sub, cfg = self.workload, self.sub, self.cfg
        pass_train_state = sub.update_params_takes_train_state
        train_state_view = types.MappingProxyType(ts)
        stop = self.s.stop
        per_step_stop_check = stop is not None and not self.s.runtime.distributed
        stopped_in_setup = self._stop_agreed()  # Before the clock starts (a collective under DDP).
        global_start_time = clock.now()
        ts['last_step_end_time'] = global_start_time
        self.global_start_time = global_start_time
        if ts['training_complete'] or not ts['is_time_remaining'] or self._goals_reached():
            _log.info('Restored trial had already finished; not training further.')
        elif stopped_in_setup:
            self.status = INTERRUPTED  # Signalled during setup: checkpoint what was restored.
        while (ts['is_time_remaining'] and not self._goals_reached() and not ts['training_complete']
               and self.status != INTERRUPTED):
            step_rng = prng.fold_in(self.rng, self.global_step)
            data_select_rng, update_rng, prep_eval_rng, eval_rng = prng.split(step_rng, 4)
            with prof.profile('Data selection'):
                batch = sub.data_selection(
                    wl, self.input_queue, self.opt_state, self.params, self.model_state,
                    self.hp, self.global_step, data_select_rng,
                )
            try:
                with prof.profile('Update parameters'):
                    kwargs = dict(
                        workload=wl,
                        current_param_container=self.params,
                        current_params_types=wl.model_params_types,
                        model_state=self.model_state,
                        hyperparameters=self.hp,
                        batch=batch,
                        loss_type=wl.loss_type,
                        optimizer_state=self.opt_state,
                        eval_results=self.eval_results,
                        global_step=self.global_step,
                        rng=update_rng,
                    )
                    if pass_train_state:
                        kwargs['train_state'] = train_state_view
                    self.opt_state, self.params, self.model_state = sub.update_params(**kwargs)
            except spec.TrainingCompleteError:
                ts['training_complete'] = True
            del batch
            self.global_step += 1
            if cfg.max_global_steps is not None and self.global_step == cfg.max_global_steps:
                ts['training_complete'] = True
            # The step's single synchronised time point.
            step_end = clock.now()
            ts['accumulated_submission_time'] += step_end - ts['last_step_end_time']
            if step_end - ts['last_eval_time'] >= wl.eval_period_time_sec or ts['training_complete']:
                self._eval_point(step_end, prep_eval_rng, eval_rng)
                if self.status == DIVERGED:
                    break
                if not per_step_stop_check and self._stop_agreed():
                    self.status = INTERRUPTED
                ts['last_step_end_time'] = clock.now()
            else:
                ts['last_step_end_time'] = step_end
            if per_step_stop_check and stop.requested:
                self.status = INTERRUPTED
            self.s.progress.update(self.global_step, ts['accumulated_submission_time'], self.budget)
        return self._finish()

    def _stop_agreed(self) -> bool:
        """Whether a stop was requested, on any rank (an all-reduce under DDP; off the clock)."""
        stop = self.s.stop
        if stop is None:
            return False
        if not self.s.runtime.distributed:
            return stop.requested
        flag = torch.tensor([stop.signum or 0], dtype=torch.int64, device=self.s.runtime.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signum = int(flag.item())
        if signum and not stop.requested:
            stop.signum = signum
        return bool(signum)

    def _eval_point(self, now: float, prep_eval_rng, eval_rng) -> None:
        ts, clock = self.train_state, self.s.clock
        if self.cfg.skip_evals:
            ts['last_eval_time'] = now
        elif self.sub.prepare_for_eval is not None:
            with self.s.profiler.profile('Prepare for eval'):
                self.opt_state, self.params, self.model_state = self.sub.prepare_for_eval(
                    workload=self.workload,
                    current_param_container=self.params,
                    current_params_types=self.workload.model_params_types,
                    model_state=self.model_state,
                    hyperparameters=self.hp,
                    loss_type=self.workload.loss_type,
                    optimizer_state=self.opt_state,
                    eval_results=self.eval_results,
                    global_step=self.global_step,
                    rng=prep_eval_rng,
                )
            ts['accumulated_submission_time'] += clock.now() - now
        ts['is_time_remaining'] = ts['accumulated_submission_time'] < self.budget
        if ts['is_time_remaining'] and not self.cfg.skip_evals:
            with self.s.profiler.profile('Evaluation'):
                self._evaluate(eval_rng)

    def _evaluate(self, eval_rng) -> None:
        ts, clock, wl = self.train_state, self.s.clock, self.workload
        reset_cuda_mem(self.s.runtime)
        eval_start = clock.now()
        try:
            result = wl.eval_model(
                self.s.global_eval_batch_size, self.params, self.model_state, eval_rng,
                self.cfg.data_dir, self.cfg.imagenet_v2_data_dir, self.global_step,
            )
        except RuntimeError as e:
            if self.s.runtime.distributed and is_communication_error(e):
                raise  # A peer is gone: training on would only fail at the next collective.
            # Upstream logs eval errors and trains on; an OOM frees memory first.
            _log.exception('Eval at step %d failed.', self.global_step)
            if 'out of memory' in str(e):
                reset_cuda_mem(self.s.runtime)
            return
        result = _python_scalars(result)
        was_reached = ts['validation_goal_reached']
        ts['validation_goal_reached'] = wl.has_reached_validation_target(result) or was_reached
        ts['test_goal_reached'] = wl.has_reached_test_target(result) or ts['test_goal_reached']
        eval_end = clock.now()
        ts['last_eval_time'] = eval_end
        ts['accumulated_eval_time'] += eval_end - eval_start
        result['score'] = ts['accumulated_submission_time']
        result['total_duration'] = eval_end - self.global_start_time
        result['accumulated_submission_time'] = ts['accumulated_submission_time']
        result['accumulated_eval_time'] = ts['accumulated_eval_time']
        result['accumulated_logging_time'] = ts['accumulated_logging_time']
        if ts['validation_goal_reached'] and not was_reached:
            self.time_to_val_target = ts['accumulated_submission_time']
        self.eval_results.append((self.global_step, result))
        metric = f'validation/{wl.target_metric_name}'
        if metric in result:
            self.s.progress.last_metric = f'{metric} {result[metric]:.4g} (target {wl.validation_target_value})'
        # One short line per eval; the full dict is in eval_measurements.csv and at DEBUG.
        _log.info('%s', eval_summary(self.global_step, metric, result.get(metric), wl.validation_target_value,
                                     ts['validation_goal_reached'], ts['accumulated_submission_time'], self.budget))
        _log.debug('Step %d, %.1fs submission time: %s', self.global_step, ts['accumulated_submission_time'],
                   {k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()})
        logging_start = clock.now()
        if self.logger is not None:
            self.logger.append_scalar_metrics(result, global_step=self.global_step,
                                              preemption_count=self.preemption_count, is_eval=True)
            if self.cfg.save_checkpoints and self.is_main:
                self._save_checkpoint()
        ts['accumulated_logging_time'] += clock.now() - logging_start
        reset_cuda_mem(self.s.runtime)
        bad = _non_finite_metrics(result)
        if bad and self.cfg.halt_on_divergence:
            _log.warning('Trial diverged at step %d (non-finite %s); ending it.', self.global_step, ', '.join(bad))
            self.status = DIVERGED

    def _save_checkpoint(self) -> None:
        if self._checkpointed_step == self.global_step:
            return  # The last eval already saved this step (upstream saves it twice).
        self._checkpointed_step = self.global_step
        self.checkpoint_path = checkpoint_utils.save_checkpoint(
            self.opt_state, self.params, self.model_state, self.train_state, self.eval_results,
            self.global_step, self.preemption_count, self.s.trial_dir, self.cfg.save_intermediate_checkpoints,
        )

    def _finish(self) -> TrialOutcome:
        ts = self.train_state
        if self.status is None:
            if self._goals_reached():
                self.status = TARGETS_REACHED
            elif not ts['is_time_remaining']:
                self.status = BUDGET_EXHAUSTED
            elif self.cfg.max_global_steps is not None and self.global_step >= self.cfg.max_global_steps:
                self.status = MAX_STEPS
            else:
                self.status = TRAINING_COMPLETE
        self.s.progress.update(self.global_step, ts['accumulated_submission_time'], self.budget, force=True)
        self.s.progress.close()
        if self.logger is not None:
            self.logger.append_scalar_metrics(
                {'score': ts['accumulated_submission_time']}, global_step=self.global_step,
                preemption_count=self.preemption_count,
            )
            self.logger.finish()
            if self.cfg.save_checkpoints and self.is_main:
                self._save_checkpoint()
        if self.time_to_val_target is None and ts['validation_goal_reached']:
            self.time_to_val_target = next(
                (r['score'] for _, r in self.eval_results if self.workload.has_reached_validation_target(r)), None
            )
        return self.outcome(self.status)

    def outcome(self, status: str) -> TrialOutcome:
        """What the trial reached so far (also after it raised: steps, evals, time)."""
        ts = self.train_state
        return TrialOutcome(
            status=status,
            global_step=self.global_step,
            accumulated_submission_time=float(ts.get('accumulated_submission_time', 0.0)),
            validation_goal_reached=bool(ts.get('validation_goal_reached', False)),
            test_goal_reached=bool(ts.get('test_goal_reached', False)),
            time_to_validation_target=self.time_to_val_target,
            num_evals=len(self.eval_results),
            preemption_count=self.preemption_count,
        )

    def after_failure(self) -> None:
        """Write what is queued (train rows logged as tensors) so the logs show the steps reached."""
        self.s.progress.close()
        if self.logger is None:
            return
        try:
            self.logger.finish()
        except Exception as e:  # noqa: BLE001 - a broken device must not hide the trial's own error
            _log.warning('Could not write the queued metric rows after the failure: %s', e)


def train_once(workload, submission: Submission, hyperparameters, rng, setup: TrialSetup) -> TrialOutcome:
    """Run one timed trial of `submission` on `workload` (upstream's train_once)."""
    trial = _Trial(workload, submission, hyperparameters, rng, setup)
    trial.setup()
    return trial.run()


def run_trial(workload, submission: Submission, hyperparameters, rng,
              setup: TrialSetup) -> Tuple[TrialOutcome, Optional[Exception], Optional[str]]:
    """`train_once` that reports a failure instead of raising it.

    Returns (outcome, exception or None, path of the last checkpoint written or
    None). A raising trial's outcome has status 'failed' and the steps, evals and
    submission time it reached.
    """
    trial = _Trial(workload, submission, hyperparameters, rng, setup)
    try:
        trial.setup()
        return trial.run(), None, trial.checkpoint_path
    except Exception as e:  # noqa: BLE001 - the caller records it
        trial.after_failure()
        return trial.outcome(FAILED), e, trial.checkpoint_path
