"""Torch-free metadata of a workload: targets, budgets, sizes, eval cadence.

Scoring, `algoperf list` and the registry read these without importing a model,
torch or any data library. Every value mirrors upstream AlgoPerf v0.6 (spec §6),
where upstream keeps them as dozens of constant `@property`s per workload class.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Dict, Optional


class WorkloadKind(str, enum.Enum):
    """Where a registered name sits in the benchmark."""

    BASE = 'base'  # One of the eight scored workloads.
    VARIANT = 'variant'  # Upstream "held-out" variants (scored in v0.5 only).
    TEST = 'test'  # Shrunk copies for CI (e.g. criteo1tb_test).
    DEV = 'dev'  # Development workloads (mnist, cifar) and our embedded ones.


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadSpec:
    """Everything about a workload that is data, not code.

    Attributes:
        name: registry name, exactly as upstream spells it (e.g. 'wmt_post_ln').
        base_workload: the base workload it belongs to (itself for a base).
        kind: base, variant, test or dev.
        impl: lazy import target of the PyTorch class, 'module.path:ClassName'.
        dataset: human-readable dataset name.
        target_metric_name: metric key without split prefix ('accuracy', 'wer').
        higher_is_better: direction of the target metric.
        validation_target_value: target on 'validation/<metric>'.
        test_target_value: target on 'test/<metric>'; None where the workload has no test
            target (upstream's `finewebedu_lm`: `has_reached_test_target` is always True).
        loss_type: name of a `spec.LossType` member (kept a string so this stays
            importable without the enum's module).
        max_allowed_runtime_sec: external-tuning budget; self-tuning gets 1.5x.
        eval_period_time_sec: minimum seconds between untimed evals.
        step_hint: approximate steps the baseline makes in the budget.
        eval_batch_size: global eval batch size (fixed by the rules).
        num_train_examples, num_eval_train_examples, num_validation_examples,
        num_test_examples: split sizes (test may be None: no test split).
        compile_model, compile_loss: upstream's torch.compile policy (spec §5.5).
        train_mean, train_stddev: input normalisation constants, where defined.
        extra: further primitive workload properties upstream logs in meta_data
            (e.g. 'vocab_size'), keyed by property name.
        notes: provenance of the values, for `algoperf list` and the README.
        data_tool: lazy import target of the `algoperf data <name>` command that
            prepares this workload's data, 'module.path:function' (called with the
            remaining argv and the program name; returns an exit code), or ''.
        stands_in_for: the upstream workload a dev workload replaces offline (digits ->
            'mnist'): a submission whose `get_batch_size` rejects this name is asked
            for that one, so upstream submissions run on it unchanged; or ''.
    """

    name: str
    base_workload: str
    kind: WorkloadKind
    impl: str
    dataset: str
    target_metric_name: str
    higher_is_better: bool
    validation_target_value: float
    test_target_value: Optional[float]
    loss_type: str
    max_allowed_runtime_sec: int
    eval_period_time_sec: int
    step_hint: int
    eval_batch_size: int
    num_train_examples: int
    num_eval_train_examples: int
    num_validation_examples: int
    num_test_examples: Optional[int]
    compile_model: bool = False
    compile_loss: bool = False
    train_mean: Any = None
    train_stddev: Any = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: str = ''
    data_tool: str = ''
    # Self-tuning budget multiple of the benchmark version in force (3 in v0.5; see
    # algoperf.benchmark_versions.apply, which sets it with the version's budgets).
    self_tuning_budget_factor: float = 1.5
    stands_in_for: str = ''

    _LOSS_TYPES = (
        'SOFTMAX_CROSS_ENTROPY',
        'SIGMOID_CROSS_ENTROPY',
        'MEAN_SQUARED_ERROR',
        'CTC_LOSS',
        'MEAN_ABSOLUTE_ERROR',
    )

    def __post_init__(self) -> None:
        def fail(field: str, why: str) -> None:
            raise ValueError(f'WorkloadSpec {self.name!r}: field {field!r} {why}')

        if not self.name or not self.name.isidentifier():
            fail('name', 'must be a non-empty identifier')
        if ':' not in self.impl:
            fail('impl', f"must look like 'module.path:ClassName', got {self.impl!r}")
        if self.loss_type not in self._LOSS_TYPES:
            fail('loss_type', f'must be one of {self._LOSS_TYPES}')
        if not math.isfinite(self.validation_target_value):
            fail('validation_target_value', 'must be finite')
        if self.test_target_value is not None and not math.isfinite(self.test_target_value):
            fail('test_target_value', 'must be finite or None')
        for field in (
            'max_allowed_runtime_sec',
            'eval_period_time_sec',
            'step_hint',
            'eval_batch_size',
            'num_train_examples',
            'num_eval_train_examples',
            'num_validation_examples',
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                fail(field, f'must be a non-negative int, got {value!r}')
        if self.num_test_examples is not None and self.num_test_examples < 0:
            fail('num_test_examples', 'must be None or non-negative')
        if not isinstance(self.kind, WorkloadKind):
            object.__setattr__(self, 'kind', WorkloadKind(self.kind))

    @property
    def budget_sec(self) -> int:
        """External-tuning budget in seconds (alias of max_allowed_runtime_sec)."""
        return self.max_allowed_runtime_sec

    def runtime_budget_sec(self, tuning_ruleset: str) -> float:
        """Budget the runner enforces: 1x external, 1.5x self-tuning (3x under v0.5)."""
        if tuning_ruleset == 'external':
            return float(self.max_allowed_runtime_sec)
        if tuning_ruleset == 'self':
            return self.self_tuning_budget_factor * self.max_allowed_runtime_sec
        raise ValueError(f"tuning_ruleset must be 'external' or 'self', got {tuning_ruleset!r}")

    def reached(self, value: float, target: float, strict: bool = True) -> bool:
        """Whether `value` meets `target` in this metric's direction.

        The runner uses strict comparison (upstream `>`/`<`); the scorer uses
        `>=`/`<=` (spec §8.2), hence the flag.
        """
        if value is None or not math.isfinite(value):
            return False
        if self.higher_is_better:
            return value > target if strict else value >= target
        return value < target if strict else value <= target

    def summary(self) -> Dict[str, Any]:
        """JSON-friendly row for `algoperf list --json`."""
        return {
            'name': self.name,
            'base_workload': self.base_workload,
            'kind': self.kind.value,
            'dataset': self.dataset,
            'target_metric': f'validation/{self.target_metric_name}',
            'higher_is_better': self.higher_is_better,
            'validation_target': self.validation_target_value,
            'test_target': self.test_target_value,
            'budget_sec': self.max_allowed_runtime_sec,
            'self_tuning_budget_sec': self.runtime_budget_sec('self'),
            'eval_period_sec': self.eval_period_time_sec,
            'step_hint': self.step_hint,
            'eval_batch_size': self.eval_batch_size,
        }

    def workload_properties(self) -> Dict[str, Any]:
        """Values of the upstream `Workload` properties this spec defines."""
        props = {
            'target_metric_name': self.target_metric_name,
            'validation_target_value': self.validation_target_value,
            'test_target_value': self.test_target_value,
            'max_allowed_runtime_sec': self.max_allowed_runtime_sec,
            'eval_period_time_sec': self.eval_period_time_sec,
            'step_hint': self.step_hint,
            'eval_batch_size': self.eval_batch_size,
            'num_train_examples': self.num_train_examples,
            'num_eval_train_examples': self.num_eval_train_examples,
            'num_validation_examples': self.num_validation_examples,
            'num_test_examples': self.num_test_examples,
        }
        props.update(self.extra)
        return props

    def variant(self, **changes: Any) -> 'WorkloadSpec':
        """A copy with some fields changed (variants share most of their base)."""
        if 'name' in changes and 'kind' not in changes:
            changes['kind'] = WorkloadKind.VARIANT
        return dataclasses.replace(self, **changes)
