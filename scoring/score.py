"""Scoring a whole log tree: load (validated), times-to-target, rules, profiles, scores.

Which workloads count comes from the targets (their `base_workloads` and held-out variants:
a benchmark version's, or `--workloads`); workloads present in the tree but not scored are
named in one line (`ScoreResult.ignored_line`) with the reason, never dropped silently.
Trials whose eval files fail validation (scoring/logs.py) are excluded before anything is
timed, so they can set no best time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from algoperf import benchmark_versions
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
    version: benchmark_versions.BenchmarkVersion = benchmark_versions.get()
    ignored: Dict[str, str] = dataclasses.field(default_factory=dict)  # workload -> why it is not scored

    @property
    def ignored_line(self) -> str:
        """One line naming the workloads in the tree that were not scored, and why ('' if none)."""
        if not self.ignored:
            return ''
        items = ', '.join(f'{w} ({why})' for w, why in sorted(self.ignored.items()))
        scorable = [w for w, why in sorted(self.ignored.items()) if not why.startswith('no target')]
        hint = f'; to score them: --workloads={",".join(scorable)}' if scorable else ''
        return f'Ignored workloads (not scored here): {items}{hint}.'


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


def schema_for(targets: Targets, workload: str) -> logs.Schema:
    """What a workload's eval files must hold for scoring and the summaries (scoring/logs.py)."""
    target = targets.get(workload)
    if target is None:  # Not scored: read only the time, check nothing else.
        return logs.Schema(required=(), optional=(time_to_target.TIME_COLUMN,))
    return logs.Schema(
        required=('global_step', time_to_target.TIME_COLUMN, target.column),
        optional=('accumulated_submission_time', f'test/{target.metric_name}'),
        bounds={target.column: logs.metric_bounds(target.metric_name)},
    )


def _kind(workload: str) -> Optional[str]:
    from algoperf import registry  # torch-free

    try:
        return registry.get_spec(workload).kind.value
    except Exception:  # Not one of ours: no kind to report.
        return None


def ignored_workloads(tree: Dict[str, List[logs.TrialLog]], report: logs.LoadReport, targets: Targets,
                      version: benchmark_versions.BenchmarkVersion) -> Dict[str, str]:
    """Workloads with logs in the tree that are not scored -> the reason."""
    counts = Counter(t.workload for trials in tree.values() for t in trials)
    scored = set(targets.base_workloads) | set(targets.held_out_workloads)
    out = {}
    for w, n in counts.items():
        if w in scored:
            continue
        trials = f'{n} trial{"s" if n != 1 else ""}'
        if targets.get(w) is None:
            out[w] = f'no target known, {trials}'
            continue
        kind = _kind(w)
        what = {'dev': 'dev workload', 'test': 'test workload', 'variant': 'variant, not held out'}.get(
            kind, 'not a base workload')
        out[w] = f'{what} of v{version.name}, {trials}' if targets.source.startswith('workload specs (v') \
            else f'{what}, not scored by {targets.source}, {trials}'
    return out


def budgets(targets: Targets, version: benchmark_versions.BenchmarkVersion) -> Dict[str, float]:
    """Base workload -> budget (s) of `version` (a workload it does not time: our spec's budget)."""
    from algoperf import registry  # torch-free

    out = {}
    for w in targets.base_workloads:
        budget = version.budget(w)
        if budget is None:
            try:
                budget = registry.get_spec(w).max_allowed_runtime_sec
            except Exception as e:
                raise ScoringError(f'--reference_submission: no budget known for workload {w!r} ({e}).') from e
        out[w] = float(budget)
    return out


def times_table(tree: Dict[str, List[logs.TrialLog]], targets: Targets) -> pd.DataFrame:
    """submission x workload table of per-workload times-to-target (NaN: no logs)."""
    rows = {name: time_to_target.workload_times(trials, targets.by_workload) for name, trials in tree.items()}
    table = pd.DataFrame.from_dict(rows, orient='index')
    table.index.name = 'submission'
    return table.reindex(sorted(table.columns), axis=1).sort_index()


def resolve_version(version: Optional[str], targets: Targets) -> benchmark_versions.BenchmarkVersion:
    """The version in force: `version` if given, else the one the targets declare, else the default."""
    return benchmark_versions.get(version or targets.benchmark_version)


def score_tree(submission_directory: str, targets: Targets, self_tuning: bool = False, strict: bool = False,
               exclude: Sequence[str] = (), num_studies: int = 3, num_trials: int = 5,
               version: Optional[str] = None,
               max_bytes: Optional[int] = logs.max_bytes_from_mb(logs.DEFAULT_MAX_LOG_MB)) -> ScoreResult:
    """Score every submission under `submission_directory`.

    Args:
        targets: targets, and which workloads are scored (base and held-out).
        version: benchmark version (default: the one `targets` declares, else 1.0); it picks the
            summaries' step-time rule and the speedups' budgets, not what is scored.
        max_bytes: size cap per eval file (scoring/logs.py).
        strict: raise on count problems and on any excluded eval file.
    """
    rules = resolve_version(version, targets)
    tree, report = logs.load_tree(submission_directory, exclude=tuple(exclude),
                                  schema_for=lambda w: schema_for(targets, w), max_bytes=max_bytes)
    if not tree:
        raise ScoringError(f'--submission_directory={submission_directory}: no submission directories found.')
    if strict and report.excluded:
        raise ScoringError(f'--strict: {report.excluded[0].reason}'
                           + (f' (+{len(report.excluded) - 1} more)' if len(report.excluded) > 1 else ''))
    scored = list(targets.base_workloads) + list(targets.held_out_workloads)
    warnings = [e.reason for e in report.excluded]
    for name, trials in tree.items():
        warnings += _count_checks(name, trials, scored, num_studies, None if self_tuning else num_trials)
    count_warnings = warnings[len(report.excluded):]
    if strict and count_warnings:
        raise ScoringError('--strict: ' + '; '.join(count_warnings[:10]) + (' ...' if len(count_warnings) > 10 else ''))
    for name in tree:
        mine = [w for w in count_warnings if w.startswith(f'{name}: ')]
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
    ignored = ignored_workloads(tree, report, targets, rules)
    return ScoreResult(times, gated, rho, scores, tree, report, warnings, rules, ignored)
