"""Validation targets per workload: from our torch-free specs or a targets JSON.

The JSON format is upstream's frozen targets file (`scoring/generate_workload_targets.py`,
`../shared/algoperf_logs/targets/*.json`):

    {"benchmark_version": "0.5", "base_workloads": [...], "held_out_workloads": [...],
     "workloads": {"<name>": {"target_metric_name": "loss", "validation_target_value": 0.1237,
                              "step_hint": 10666}, ...}}

Direction of a metric follows upstream's scorer: a metric *name* containing one of
`ce_loss, error_rate, ctc_loss, wer, l1_loss, loss, ppl` is minimised (checked first, as
upstream); one containing `mean_average_precision, ssim, accuracy, bleu` is maximised. A
`target_metric_goal` field ('minimize'/'maximize'), where a file has one, wins. Reached means `<=` / `>=`
(non-strict, unlike the runner's `<` / `>`).

Benchmark versions (`algoperf.benchmark_versions`): targets from our specs are scored under a
version's rules (its base workloads, its held-out variants). `workload_targets_v1.0.json` in
this package is the v1.0 file in upstream's format, generated from the specs and the version
table by `spec_targets_json('1.0')` (`python scripts/make_scoring_extract.py --write_targets 1.0`;
a test checks the two agree). Note that upstream's own v1.0-era `workload_targets.json` declares
`"benchmark_version": "0.6"` although it lists the nine v1.0 base workloads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

from algoperf import benchmark_versions

MINIMIZE = ('ce_loss', 'error_rate', 'ctc_loss', 'wer', 'l1_loss', 'loss', 'ppl')  # 'ppl': the v1.0 LM
MAXIMIZE = ('mean_average_precision', 'ssim', 'accuracy', 'bleu')

# The eight scored workloads of v0.5 and v0.6 (a targets file without "base_workloads" gets these).
BASE_WORKLOADS = benchmark_versions.get('0.6').base_workloads
V1_TARGETS_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'workload_targets_v1.0.json')


class TargetsError(ValueError):
    """A bad targets file; the message names the file and the field."""


def higher_is_better(metric_name: str) -> bool:
    """Upstream's substring rule (minimised names are checked first)."""
    if any(m in metric_name for m in MINIMIZE):
        return False
    if any(m in metric_name for m in MAXIMIZE):
        return True
    raise TargetsError(f'metric {metric_name!r}: cannot tell whether it is minimised or maximised.')


@dataclasses.dataclass(frozen=True)
class Target:
    workload: str
    metric_name: str  # without split prefix, e.g. 'accuracy'
    validation_target: float
    higher_is_better: bool
    test_target: Optional[float] = None  # From our specs only (upstream's JSON has none).
    step_hint: Optional[int] = None

    @property
    def column(self) -> str:
        return f'validation/{self.metric_name}'


@dataclasses.dataclass(frozen=True)
class Targets:
    """Targets of every known workload, plus which workloads are scored."""

    by_workload: Dict[str, Target]
    base_workloads: tuple
    held_out_workloads: tuple = ()
    source: str = 'workload specs'
    benchmark_version: Optional[str] = None

    def get(self, workload: str) -> Optional[Target]:
        return self.by_workload.get(workload)


def from_specs(version: Optional[str] = None, workloads: Optional[Sequence[str]] = None) -> Targets:
    """Targets from this package's torch-free workload specs, scored under `version`'s rules.

    Args:
        version: benchmark version ('1.0' default, '0.6', '0.5'): its base workloads and held-out variants.
        workloads: score these instead of the version's base workloads (no held-out gating),
            e.g. ('digits', 'mnist') for trees of dev runs.
    """
    from algoperf import registry  # torch-free

    rules = benchmark_versions.get(version)
    by = {}
    for name in registry.list_workloads():
        s = benchmark_versions.apply(registry.get_spec(name), rules.name)
        by[name] = Target(name, s.target_metric_name, s.validation_target_value, s.higher_is_better,
                          s.test_target_value, s.step_hint)
    if workloads:
        return Targets(by, tuple(workloads), (), f'workload specs ({", ".join(workloads)})', rules.name)
    return Targets(by, rules.base_workloads, rules.held_out_workloads, f'workload specs (v{rules.name})', rules.name)


def spec_targets_json(version: str) -> dict:
    """Upstream's targets-file format for `version`, from our specs (every registered workload)."""
    targets = from_specs(version)
    rules = benchmark_versions.get(version)
    return {
        '_comment': f'AlgoPerf v{rules.name} scoring targets in upstream\'s format, generated from algoperf-fast\'s '
                    'workload specs and algoperf/benchmark_versions.py by scoring.targets.spec_targets_json; '
                    'regenerate with `python scripts/make_scoring_extract.py --write_targets ' + rules.name + '`.',
        'benchmark_version': rules.name,
        'base_workloads': list(targets.base_workloads),
        'held_out_workloads': list(targets.held_out_workloads),
        'workloads': {
            name: {
                'target_metric_name': t.metric_name,
                'target_metric_goal': 'maximize' if t.higher_is_better else 'minimize',
                'validation_target_value': t.validation_target,
                'step_hint': t.step_hint,
            }
            for name, t in sorted(targets.by_workload.items())
        },
    }


def _load_json(path: str, flag: str):
    """Decoded JSON, or TargetsError naming the flag (missing file) or the position (bad JSON)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise TargetsError(f'--{flag}={path}: file not found.') from e
    except json.JSONDecodeError as e:
        raise TargetsError(f'{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}.') from e


def from_json(path: str) -> Targets:
    """Targets from an upstream-format targets JSON file."""
    raw = _load_json(path, 'workload_targets')
    if not isinstance(raw, dict) or not isinstance(raw.get('workloads'), dict):
        raise TargetsError(f'{path}: expected an object with a "workloads" object.')
    by = {}
    for name, entry in raw['workloads'].items():
        for field in ('target_metric_name', 'validation_target_value'):
            if not isinstance(entry, dict) or field not in entry:
                raise TargetsError(f'{path}: workloads.{name}: missing "{field}".')
        value = entry['validation_target_value']
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TargetsError(f'{path}: workloads.{name}.validation_target_value must be a number, got {value!r}.')
        metric = entry['target_metric_name']
        goal = entry.get('target_metric_goal')
        if goal not in (None, 'minimize', 'maximize'):
            raise TargetsError(f'{path}: workloads.{name}.target_metric_goal must be "minimize" or "maximize".')
        try:
            higher = goal == 'maximize' if goal else higher_is_better(metric)
        except TargetsError as e:
            raise TargetsError(f'{path}: workloads.{name}: {e}') from None
        step_hint = entry.get('step_hint')
        by[name] = Target(name, metric, float(value), higher, None,
                          step_hint if isinstance(step_hint, int) and not isinstance(step_hint, bool) else None)
    base = tuple(raw.get('base_workloads') or BASE_WORKLOADS)
    held_out = tuple(raw.get('held_out_workloads') or ())
    missing = [w for w in base + held_out if w not in by]
    if missing:
        raise TargetsError(f'{path}: no target for workload(s) {", ".join(missing)}.')
    version = raw.get('benchmark_version')
    if version is not None and not isinstance(version, str):
        raise TargetsError(f'{path}: benchmark_version must be a string such as "1.0", got {version!r}.')
    return Targets(by, base, held_out, os.path.basename(path), version)


def read_held_out(path: str) -> List[str]:
    """A held-out workloads JSON: a list of variant names (upstream's v0.5 file)."""
    names = _load_json(path, 'held_out_workloads')
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TargetsError(f'{path}: expected a JSON list of workload names.')
    return names
