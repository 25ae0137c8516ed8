"""Scoring a whole log tree: load, times-to-target, rules, profiles, scores."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from scoring import logs, performance_profile, time_to_target
from scoring.targets import Targets

_log = logging.getLogger(__name__)


class ScoringError(ValueError):
    """Input that cannot be scored (with --strict: a count check that failed)."""


@dataclasses.dataclass
class ScoreResult:
    times: pd.DataFrame  # submission x workload, before the rules (time_to_targets.csv)
    gated: pd.DataFrame  # submission x base workload, after held-out and 4x rules
    rho: pd.DataFrame  # submission x tau
    scores: pd.Series  # submission -> benchmark score
    trials: Dict[str, List[logs.TrialLog]]
    load_report: logs.LoadReport
    warnings: List[str]


def _count_checks(name: str, trials: List[logs.TrialLog], workloads: Sequence[str], num_studies: int,
                  num_trials: Optional[int]) -> List[str]:
    problems = []
    present = {t.workload for t in trials}
    missing = [w for w in workloads if w not in present]
    if missing:
        problems.append(f'{name}: no logs for workload(s) {", ".join(missing)}')
    studies = {w: {t.study for t in trials if t.workload == w} for w in workloads if w in present}
    for w, s in studies.items():
        if len(s) != num_studies:
            problems.append(f'{name}: {w} has {len(s)} studies, expected {num_studies}')
    if num_trials is not None:
        per_study = Counter((t.workload, t.study) for t in trials if t.workload in workloads)
        for (w, st), n in sorted(per_study.items()):
            if n != num_trials:
                problems.append(f'{name}: {w}/{st} has {n} trials with eval logs, expected {num_trials}')
    return problems


def needed_columns(targets: Targets, workload: str) -> Optional[set]:
    """Columns scoring and the summaries read for a workload (all if it has no target)."""
    target = targets.get(workload)
    if target is None:
        return {time_to_target.TIME_COLUMN}
    return {time_to_target.TIME_COLUMN, 'accumulated_submission_time', 'global_step', target.column,
            f'test/{target.metric_name}'}


def times_table(tree: Dict[str, List[logs.TrialLog]], targets: Targets) -> pd.DataFrame:
    """submission x workload table of per-workload times-to-target (NaN: no logs)."""
    rows = {name: time_to_target.workload_times(trials, targets.by_workload) for name, trials in tree.items()}
    table = pd.DataFrame.from_dict(rows, orient='index')
    table.index.name = 'submission'
    return table.reindex(sorted(table.columns), axis=1).sort_index()


def score_tree(submission_directory: str, targets: Targets, self_tuning: bool = False, strict: bool = False,
               exclude: Sequence[str] = (), num_studies: int = 3, num_trials: int = 5) -> ScoreResult:
    """Score every submission under `submission_directory`."""
    tree, report = logs.load_tree(submission_directory, exclude=tuple(exclude),
                                  columns_for=lambda w: needed_columns(targets, w))
    if not tree:
        raise ScoringError(f'--submission_directory={submission_directory}: no submission directories found.')
    scored = list(targets.base_workloads) + list(targets.held_out_workloads)
    warnings = []
    for name, trials in tree.items():
        warnings += _count_checks(name, trials, scored, num_studies, None if self_tuning else num_trials)
    if strict and warnings:
        raise ScoringError('--strict: ' + '; '.join(warnings[:10]) + (' ...' if len(warnings) > 10 else ''))
    for name in tree:
        mine = [w for w in warnings if w.startswith(f'{name}: ')]
        if mine:
            more = f' (+{len(mine) - 1} more)' if len(mine) > 1 else ''
            _log.warning('%s%s', mine[0], more)
    times = times_table(tree, targets)
    gated = performance_profile.apply_rules(times, targets.base_workloads, targets.held_out_workloads)
    for base in targets.base_workloads:  # A base workload nobody logged still counts in N.
        if base not in gated.columns:
            gated[base] = np.nan
    gated = gated[list(targets.base_workloads)]
    rho = performance_profile.profiles(performance_profile.ratios(gated), len(targets.base_workloads))
    scores = performance_profile.benchmark_scores(rho)
    return ScoreResult(times, gated, rho, scores, tree, report, warnings)
