"""Time-to-target: per trial, per study, per workload (upstream v0.5/v0.6 rules).

Per trial: the first eval whose `validation/<metric>` reaches the target (`>=` for a
maximised metric, `<=` for a minimised one; NaN never reaches) gives an eval index and a
time, the trial's `score` column at that row (= accumulated submission time).

Per study: among trials that reach the target, the one whose first reaching eval has the
*smallest eval index* gives the study's time; this is upstream's `idxmin` over indices,
which is usually but not always the fastest trial (on the v0.5 logs taking the fastest
instead moves lawa_ema from 0.3384 to 0.3434). No trial reaching: inf.

Ties (two or more trials first reach the target at the same eval index) go to the
*smallest time* among them, then to the lower trial number. Upstream's `idxmin` takes the
first tied trial in `os.listdir` order, so its answer depends on the filesystem; the
published v0.6 external-tuning leaderboard (Baseline 0.4590, Shampoo 0.6244) is what the
smallest-time rule gives (the first-listed rule on the same logs gave Baseline 0.4716), and
every v0.5 score is the same under both rules. The result never depends on listing order.

Per workload: `np.median` over the studies that have at least one eval file; inf takes
part like any value (so 2 of 3 studies missing the target gives inf). No budget cap is
applied: upstream never turns a time above the budget into inf.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from scoring.logs import TrialLog
from scoring.targets import Target

TIME_COLUMN = 'score'


def first_reaching_index(values: np.ndarray, target: Target) -> Optional[int]:
    """Index of the first eval reaching the target, or None."""
    with np.errstate(invalid='ignore'):
        reached = values >= target.validation_target if target.higher_is_better else values <= target.validation_target
    if not reached.any():
        return None
    return int(np.argmax(reached))


def trial_time_to_target(trial: TrialLog, target: Target, time_column: str = TIME_COLUMN) -> Tuple[Optional[int], float]:
    """(first reaching eval index or None, its time or inf) for one trial."""
    values = trial.columns.get(target.column)
    times = trial.columns.get(time_column)
    if values is None or times is None:
        return None, math.inf
    index = first_reaching_index(values, target)
    if index is None:
        return None, math.inf
    return index, float(times[index])


def select_trial(trials: List[TrialLog], target: Target,
                 time_column: str = TIME_COLUMN) -> Tuple[Optional[TrialLog], Optional[int], float]:
    """Upstream's per-study rule: (trial, its first reaching eval index, its time) for the
    reaching trial with the smallest eval index, ties to the smallest time, then to the
    lower trial number (module docstring); (None, None, inf) if none reaches."""
    best: Tuple[Optional[TrialLog], Optional[int], float] = (None, None, math.inf)
    best_key = None
    for trial in trials:
        index, time = trial_time_to_target(trial, target, time_column)
        if index is None:
            continue
        key = (index, time, _trial_number(trial.trial), trial.path)  # Total order: listing order never matters.
        if best_key is None or key < best_key:
            best, best_key = (trial, index, time), key
    return best


def _trial_number(name: str) -> int:
    """`trial_12` -> 12 (names without a number sort last)."""
    digits = name.rpartition('_')[2]
    return int(digits) if digits.isdigit() else 1 << 62


def study_time_to_target(trials: List[TrialLog], target: Target, time_column: str = TIME_COLUMN) -> float:
    """The study's time-to-target (inf if no trial reaches the target)."""
    return select_trial(trials, target, time_column)[2]


def group_by_workload_and_study(trials: Iterable[TrialLog]) -> Dict[str, Dict[str, List[TrialLog]]]:
    grouped: Dict[str, Dict[str, List[TrialLog]]] = defaultdict(lambda: defaultdict(list))
    for t in trials:
        grouped[t.workload][t.study].append(t)
    return grouped


def workload_times(trials: Iterable[TrialLog], targets: Dict[str, Target],
                   time_column: str = TIME_COLUMN) -> Dict[str, float]:
    """Workload -> median over studies of the study time-to-target (workloads with a target)."""
    out = {}
    for workload, studies in group_by_workload_and_study(trials).items():
        target = targets.get(workload)
        if target is None:
            continue
        times = [study_time_to_target(ts, target, time_column) for ts in studies.values()]
        out[workload] = float(np.median(times))
    return out
