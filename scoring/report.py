"""Output files and the printed leaderboard of `algoperf score`.

    time_to_targets.csv        submission x scored workload, median time-to-target (s) before
                               the 4x/held-out rules (inf: not reached, empty: no logs) — upstream's file
    time_to_targets_gated.csv  the same after the rules, base workloads only: what the profile uses
    scores.csv                 submission, score (benchmark score in [0, 1]), rank
    performance_profiles.csv   rho_s(tau) per submission on the tau grid (tau labels to 6 decimals)
    performance_profile_score.csv  the same table under upstream's name and labels (full-precision tau)
    <submission>_summary.csv   upstream's per-trial summary (layout below)
    <submission>_study_summary.csv  per workload and study: chosen trial, target, reached, best
                               value, time to best and to target, step time, best test value
    speedups.csv               with --reference_submission: per-workload and geometric-mean speedup
    warnings.txt               excluded eval files (file: line: reason) and count warnings

Upstream's per-trial summary, one row per trial of every workload with a target, workloads
sorted, as `scoring/score_submissions.py` writes it (spec §8): an unnamed index, `workload`
(the directory name, e.g. `wmt_pytorch`), `trial`, `val target metric name`, `val target
metric value`, `val target reached`, `best metric value on val`, `time to best eval on val
(s)`, `time to target on val (s)`, `step_time (s)`; then, for v0.5/v0.6, the test-split
columns (`test target metric name`, `test target metric value`, `test target reached`,
`best metric value on test`, `time to best eval on test (s)`, `time to target on test (s)`,
test targets from our specs), or, for v1.0, `step_hint` (upstream dropped the test columns).
Times are `accumulated_submission_time` (`score` where a file lacks it; they are equal).
Differences from upstream, where its code is order-dependent: best values skip NaN (upstream's
builtin `max` returns NaN or not depending on where the NaN is), and the test time to target is
the first reaching eval's (upstream reports the best test eval's time).

Step time, by the version's rule (`algoperf.benchmark_versions`, `summary_step_time`):
  * 'last' (v0.5, v0.6): last accumulated_submission_time / last global_step, per trial;
  * 'median' (v1.0, upstream's submissions_algorithms scorer): nanmedian over evals of
    Δaccumulated_submission_time / Δglobal_step (differences from 0 at the first eval), pooled
    over all trials of the workload in upstream's summary, over the chosen trial in ours.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from algoperf import benchmark_versions
from scoring import time_to_target
from scoring.logs import TrialLog
from scoring.score import ScoreResult
from scoring.targets import Targets


def _fmt_time(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    if math.isinf(value):
        return 'inf'
    return f'{value:,.0f}'


def leaderboard_table(result: ScoreResult) -> str:
    """Ranked scores with the gated per-workload times (seconds)."""
    order = result.scores.sort_values(ascending=False, kind='stable').index
    workloads = list(result.gated.columns)
    short = {w: w.replace('librispeech_', 'ls_').replace('imagenet_', 'in_') for w in workloads}
    name_w = max([len('submission')] + [len(s) for s in order]) + 2
    head = f'{"rank":>4}  {"submission":<{name_w}}{"score":>8}' + ''.join(f'{short[w]:>14}' for w in workloads)
    lines = [head, '-' * len(head)]
    for rank, name in enumerate(order, start=1):
        times = ''.join(f'{_fmt_time(result.gated.loc[name, w]):>14}' for w in workloads)
        lines.append(f'{rank:>4}  {name:<{name_w}}{result.scores[name]:>8.4f}{times}')
    lines.append('Times: median time-to-target over studies, seconds, after the 4x and held-out rules '
                 '(inf: no credit, -: no logs).')
    return '\n'.join(lines)


def _submission_time(trial: TrialLog) -> Optional[np.ndarray]:
    cols = trial.columns
    return cols.get('accumulated_submission_time', cols.get(time_to_target.TIME_COLUMN))


def trial_step_times(trials: List[TrialLog], rule: str) -> float:
    """Seconds per step by `rule` ('last' or 'median', module docstring); NaN if unknown."""
    if rule == 'last':
        if len(trials) != 1:
            raise ValueError('the "last" step-time rule describes one trial')
        steps, sub_time = trials[0].columns.get('global_step'), _submission_time(trials[0])
        if steps is None or sub_time is None or not len(steps) or steps[-1] <= 0:
            return math.nan
        return float(sub_time[-1] / steps[-1])
    ratios = []
    for trial in trials:
        steps, sub_time = trial.columns.get('global_step'), _submission_time(trial)
        if steps is None or sub_time is None or not len(steps):
            continue
        with np.errstate(divide='ignore', invalid='ignore'):
            ratios.append(np.diff(sub_time, prepend=0) / np.diff(steps, prepend=0))
    if not ratios:
        return math.nan
    pooled = np.concatenate(ratios)
    if np.isnan(pooled).all():
        return math.nan
    return float(np.nanmedian(pooled))


def _trial_summary(trials: List[TrialLog], targets: Targets, workload: str, study: str, rule: str) -> Dict:
    target = targets.get(workload)
    chosen, chosen_index, _ = time_to_target.select_trial(trials, target)
    row = {
        'workload': workload,
        'study': study,
        'validation_target_metric': target.column,
        'validation_target_value': target.validation_target,
        'validation_target_reached': chosen is not None,
        'trial': chosen.trial if chosen else '',
    }
    # Without a reaching trial, describe the trial with the best validation value.
    if chosen is None:
        best = None
        for trial in trials:
            values = trial.columns.get(target.column)
            if values is None or not np.isfinite(values).any():
                continue
            v = np.nanmax(values) if target.higher_is_better else np.nanmin(values)
            if best is None or (v > best[0] if target.higher_is_better else v < best[0]):
                best = (v, trial)
        chosen = best[1] if best else (trials[0] if trials else None)
        row['trial'] = chosen.trial if chosen else ''
    if chosen is None:
        return row
    cols = chosen.columns
    values = cols.get(target.column)
    times = cols.get(time_to_target.TIME_COLUMN)
    if values is not None and np.isfinite(values).any():
        best_i = int(np.nanargmax(values) if target.higher_is_better else np.nanargmin(values))
        row['best_validation_value'] = float(values[best_i])
        row['time_to_best_validation_s'] = float(times[best_i]) if times is not None else math.nan
    row['time_to_target_s'] = float(times[chosen_index]) if chosen_index is not None and times is not None else math.inf
    step_time = trial_step_times([chosen], rule)
    if np.isfinite(step_time):
        row['step_time_s'] = step_time
    test = cols.get(f'test/{target.metric_name}')
    if test is not None and np.isfinite(test).any():
        row['best_test_value'] = float(np.nanmax(test) if target.higher_is_better else np.nanmin(test))
    return row


def submission_summary(trials: List[TrialLog], targets: Targets, workloads: List[str],
                       rule: str = 'last') -> pd.DataFrame:
    """Ours: one row per workload and study (the chosen trial, or the best one if none reaches)."""
    grouped = time_to_target.group_by_workload_and_study(trials)
    rows = [
        _trial_summary(study_trials, targets, w, study, rule)
        for w in workloads if w in grouped
        for study, study_trials in sorted(grouped[w].items())
    ]
    return pd.DataFrame(rows)


def _test_target(workload: str, target) -> Optional[float]:
    if target.test_target is not None:
        return target.test_target
    from algoperf import registry  # torch-free

    try:
        return registry.get_spec(workload).test_target_value
    except Exception:  # Not one of our workloads: no test target.
        return None


def _split_columns(trial: TrialLog, column: str, target_value: Optional[float], higher: bool) -> tuple:
    """(reached, best value, time to best, time to target) of one split's metric in one trial."""
    values, times = trial.columns.get(column), _submission_time(trial)
    if values is None or times is None or not len(values) or np.isnan(values).all():
        return False, math.nan, math.nan, math.inf
    best_i = int(np.nanargmax(values) if higher else np.nanargmin(values))
    reached_i = None
    if target_value is not None:
        with np.errstate(invalid='ignore'):
            hits = values >= target_value if higher else values <= target_value
        reached_i = int(np.argmax(hits)) if hits.any() else None
    return (reached_i is not None, float(values[best_i]), float(times[best_i]),
            float(times[reached_i]) if reached_i is not None else math.inf)


def upstream_summary(trials: List[TrialLog], targets: Targets,
                     version: benchmark_versions.BenchmarkVersion) -> pd.DataFrame:
    """Upstream's `<submission>_summary.csv` (module docstring): one row per trial."""
    order = {id(t): i for i, t in enumerate(trials)}
    by_dir: Dict[str, List[TrialLog]] = {}
    for t in trials:
        if targets.get(t.workload) is not None:
            by_dir.setdefault(f'{t.workload}_{t.framework}', []).append(t)
    rows, index = [], []
    for wl_dir in sorted(by_dir):
        group = by_dir[wl_dir]
        target = targets.get(group[0].workload)
        pooled = trial_step_times(group, 'median') if version.summary_step_time == 'median' else None
        test_target = _test_target(group[0].workload, target) if version.summary_step_time == 'last' else None
        for t in group:
            reached, best, t_best, t_target = _split_columns(t, target.column, target.validation_target,
                                                             target.higher_is_better)
            row = {
                'workload': wl_dir,
                'trial': t.trial,
                'val target metric name': target.column,
                'val target metric value': target.validation_target,
                'val target reached': reached,
                'best metric value on val': best,
                'time to best eval on val (s)': t_best,
                'time to target on val (s)': t_target,
                'step_time (s)': pooled if pooled is not None else trial_step_times([t], 'last'),
            }
            if version.summary_step_time == 'median':
                row['step_hint'] = target.step_hint
            else:
                test_col = f'test/{target.metric_name}'
                reached, best, t_best, t_target = _split_columns(t, test_col, test_target, target.higher_is_better)
                row.update({
                    'test target metric name': test_col,
                    'test target metric value': test_target,
                    'test target reached': reached,
                    'best metric value on test': best,
                    'time to best eval on test (s)': t_best,
                    'time to target on test (s)': t_target,
                })
            rows.append(row)
            index.append(order[id(t)])
    return pd.DataFrame(rows, index=index)


def write_outputs(result: ScoreResult, targets: Targets, output_dir: str,
                  speedup_table: Optional[pd.DataFrame] = None) -> List[str]:
    """Write every CSV; returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    written = []

    def save(df: pd.DataFrame, name: str, index: bool = True) -> None:
        path = os.path.join(output_dir, name)
        df.to_csv(path, index=index)
        written.append(path)

    scored = [w for w in list(targets.base_workloads) + list(targets.held_out_workloads) if w in result.times.columns]
    save(result.times[sorted(scored)], 'time_to_targets.csv')
    save(result.gated, 'time_to_targets_gated.csv')
    order = result.scores.sort_values(ascending=False, kind='stable')
    scores = pd.DataFrame({'score': order, 'rank': range(1, len(order) + 1)})
    scores.index.name = 'submission'
    save(scores, 'scores.csv')
    rho = result.rho.copy()
    rho.columns = [f'{t:.6f}' for t in rho.columns]
    rho.index.name = 'submission'
    save(rho, 'performance_profiles.csv')
    upstream_rho = result.rho.copy()
    upstream_rho.index.name = 'submission'
    save(upstream_rho, 'performance_profile_score.csv')  # Upstream's name: tau labels as str(float).
    rule = result.version.summary_step_time
    for name, trials in result.trials.items():
        save(upstream_summary(trials, targets, result.version), f'{name}_summary.csv')
        save(submission_summary(trials, targets, scored, rule), f'{name}_study_summary.csv', index=False)
    if speedup_table is not None:
        speedup_table.index.name = 'submission'
        save(speedup_table, 'speedups.csv')
    lines = list(result.warnings) + ([result.ignored_line] if result.ignored_line else [])
    if lines:
        path = os.path.join(output_dir, 'warnings.txt')
        with open(path, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        written.append(path)
    return written
