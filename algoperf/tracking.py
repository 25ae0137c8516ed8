"""Experiment tracking: TensorBoard event files and Weights & Biases, fed the rows the CSV logs get.

Upstream writes TensorBoard scalars (through clu) into every trial directory, the same rows as
`measurements.csv`, and logs to W&B with `--use_wandb`. Here a `Tracker` receives each row at the
moment `MetricLogger` writes it to `measurements.csv`: that happens in the runner's eval/logging
block, off the clock, and rows carrying device tensors have already been read by then (the
logger's queue), so tracking adds no host sync and no time to the measured interval.

- TensorBoard: on by default when the `tensorboard` package is installed (`--use_tensorboard`
  forces it on, or off); written with torch's `SummaryWriter` (tensorboard's protos, no
  TensorFlow) to `<trial>/events.out.tfevents.*`. Eval rows also get `step_time_ms`, the mean
  submission time per step since the previous eval (upstream's v1.0 logs a similar scalar).
- W&B (`--use_wandb`): the same scalars, plus the run flags and hyperparameters as the run
  config; runs grouped by `<experiment_name>/<workload>` (the sweep layout makes that
  `<submission>/study_<k>/<workload>`), named by trial. `WANDB_MODE=offline` works without a
  network (W&B's own switch); `WANDB_PROJECT` picks the project (default 'algoperf').
A missing package is one line naming it (exit 2), before anything is written.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
from typing import Any, Dict, List, Mapping, Optional

from algoperf.errors import UserError

# Non-metric columns upstream's rows carry; not plotted as scalars.
_NOT_SCALARS = ('global_step', 'preemption_count')


class TrackingError(UserError):
    """A tracking backend that was asked for but cannot be used."""


def tensorboard_available() -> bool:
    return importlib.util.find_spec('tensorboard') is not None


def check_available(use_tensorboard: Optional[bool], use_wandb: bool) -> None:
    """Fail early (one line) when a requested backend's package is missing."""
    if use_tensorboard and not tensorboard_available():
        raise TrackingError('--use_tensorboard: the `tensorboard` package is not installed (pip install tensorboard).')
    if use_wandb and importlib.util.find_spec('wandb') is None:
        raise TrackingError('--use_wandb: the `wandb` package is not installed (pip install wandb).')


def _scalars(row: Mapping[str, Any]) -> Dict[str, float]:
    out = {}
    for key, value in row.items():
        if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        out[key] = float(value)
    return out


class Tracker:
    """Receives every logged row; subclasses send it somewhere."""

    def __init__(self) -> None:
        self._last_eval: Optional[tuple] = None  # (global_step, accumulated_submission_time)

    def _with_step_time(self, row: Mapping[str, Any], scalars: Dict[str, float]) -> Dict[str, float]:
        step, t = row.get('global_step'), row.get('accumulated_submission_time')
        if step is None or t is None or 'score' not in row:
            return scalars
        if self._last_eval is not None and step > self._last_eval[0]:
            dt = (float(t) - self._last_eval[1]) / (step - self._last_eval[0])
            if math.isfinite(dt):
                scalars['step_time_ms'] = 1000.0 * dt
        self._last_eval = (int(step), float(t))
        return scalars

    def log_row(self, row: Mapping[str, Any]) -> None:
        step = row.get('global_step')
        if step is None:
            return
        scalars = self._with_step_time(row, _scalars(row))
        if scalars:
            self.write(scalars, int(step))

    def write(self, scalars: Dict[str, float], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: str, purge_step: Optional[int] = None) -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (pulls tensorboard)

        # purge_step: on resume, events after the restored step are hidden, like the CSV rows.
        self._writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step)

    def write(self, scalars: Dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbTracker(Tracker):
    def __init__(self, trial_dir: str, group: str, name: str, config: Dict[str, Any], resume: bool) -> None:
        super().__init__()
        import wandb  # noqa: PLC0415

        self._run = wandb.init(
            project=os.environ.get('WANDB_PROJECT', 'algoperf'), group=group, name=name, job_type='trial',
            config=config, dir=trial_dir, reinit='create_new', id=_wandb_id(trial_dir),
            resume='allow' if resume else None,
        )

    def write(self, scalars: Dict[str, float], step: int) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


def _wandb_id(trial_dir: str) -> str:
    """A stable run id per trial directory, so a resumed trial continues its W&B run."""
    import hashlib  # noqa: PLC0415

    return hashlib.sha1(os.path.abspath(trial_dir).encode()).hexdigest()[:16]


def make_trackers(*, trial_dir: str, use_tensorboard: Optional[bool], use_wandb: bool, group: str, name: str,
                  run_config: Dict[str, Any], resumed_step: Optional[int] = None) -> List[Tracker]:
    """The trackers for one trial (rank 0 only; call after `check_available`)."""
    trackers: List[Tracker] = []
    if use_tensorboard or (use_tensorboard is None and tensorboard_available()):
        trackers.append(TensorBoardTracker(trial_dir, purge_step=resumed_step))
    if use_wandb:
        trackers.append(WandbTracker(trial_dir, group, name, run_config, resume=resumed_step is not None))
    return trackers
