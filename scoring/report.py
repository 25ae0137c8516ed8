"""Output files and the printed leaderboard of `algoperf score`.

    time_to_targets.csv        submission x scored workload, median time-to-target (s) before
                               the 4x/held-out rules (inf: not reached, empty: no logs) — upstream's file
    time_to_targets_gated.csv  the same after the rules, base workloads only: what the profile uses
    scores.csv                 submission, score (benchmark score in [0, 1]), rank
    performance_profiles.csv   rho_s(tau) per submission on the tau grid
    <submission>_summary.csv   per workload and study: chosen trial, target, reached, best value,
                               time to best and to target, step time, best test value
    speedups.csv               with --reference_submission: per-workload and geometric-mean speedup
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

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


def _trial_summary(trials: List[TrialLog], targets: Targets, workload: str, study: str) -> Dict:
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
    steps, sub_time = cols.get('global_step'), cols.get('accumulated_submission_time')
    if steps is not None and sub_time is not None and len(steps) and steps[-1] > 0:
        row['step_time_s'] = float(sub_time[-1] / steps[-1])
    test = cols.get(f'test/{target.metric_name}')
    if test is not None and np.isfinite(test).any():
        row['best_test_value'] = float(np.nanmax(test) if target.higher_is_better else np.nanmin(test))
    return row


def submission_summary(trials: List[TrialLog], targets: Targets, workloads: List[str]) -> pd.DataFrame:
    grouped = time_to_target.group_by_workload_and_study(trials)
    rows = [
        _trial_summary(study_trials, targets, w, study)
        for w in workloads if w in grouped
        for study, study_trials in sorted(grouped[w].items())
    ]
    return pd.DataFrame(rows)


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
    for name, trials in result.trials.items():
        save(submission_summary(trials, targets, scored), f'{name}_summary.csv', index=False)
    if speedup_table is not None:
        speedup_table.index.name = 'submission'
        save(speedup_table, 'speedups.csv')
    if result.warnings:
        path = os.path.join(output_dir, 'warnings.txt')
        with open(path, 'w') as f:
            f.write('\n'.join(result.warnings) + '\n')
        written.append(path)
    return written
