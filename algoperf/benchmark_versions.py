"""AlgoPerf benchmark versions: which rules (budgets, eval periods, scored workloads) are in force.

Torch-free, like the workload specs: the runner, `algoperf list` and the scorer all read it.

- **1.0** (default; upstream v1.0.0, 2026-02-05): 4x A100 (40 GB), TF32 matmuls, nine base
  workloads including `finewebedu_lm`, no held-out variants, self-tuning 1.5x budget. Budgets and
  eval periods from `../shared/reference/algoperf_v1.md` §2.2 (upstream `workload.py` files at the
  A100 migration, PR #892; they match the v1.0.0 docs table).
- **0.6**: 8x V100, the eight base workloads, no held-out variants, self-tuning 1.5x; the values our
  workload specs carry (upstream 2c90454).
- **0.5**: 8x V100, the eight base workloads plus one sampled held-out variant per dataset gating its
  base both ways, self-tuning 3x; budgets and step hints of the 2024 leaderboard (spec §6.0, the
  bracketed values). Eval periods are v0.6's (the v0.5 code used the same ones).

A variant takes its base workload's budget and eval period in every version (upstream variants
inherit them). Dev and test workloads (`digits`, `mnist`, `criteo1tb_test`, ...) keep their own.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

from algoperf.errors import UserError

DEFAULT_VERSION = '1.0'

_EIGHT = (
    'criteo1tb', 'fastmri', 'imagenet_resnet', 'imagenet_vit',
    'librispeech_conformer', 'librispeech_deepspeech', 'ogbg', 'wmt',
)
_NINE = (
    'criteo1tb', 'fastmri', 'imagenet_resnet', 'imagenet_vit',
    'librispeech_conformer', 'librispeech_deepspeech', 'finewebedu_lm', 'ogbg', 'wmt',
)

# v0.5's sampled held-out variants (upstream scoring/algoperf_v05, seed 3438810845).
V05_HELD_OUT = (
    'librispeech_conformer_layernorm', 'imagenet_resnet_large_bn_init', 'ogbg_model_size',
    'wmt_glu_tanh', 'fastmri_tanh', 'criteo1tb_embed_init',
)


@dataclasses.dataclass(frozen=True)
class BenchmarkVersion:
    """The rules of one benchmark version.

    Attributes:
        name: '1.0', '0.6' or '0.5'.
        hardware: the hardware the budgets were calibrated on (recorded in meta_data).
        base_workloads: the scored workloads; the performance profile divides by their number.
        held_out_workloads: variants that gate their base (v0.5 only).
        timing: base workload -> (max_allowed_runtime_sec, eval_period_time_sec).
        step_hints: base workload -> step_hint, where it differs from the spec's (v0.5).
        self_tuning_budget_factor: self-tuning budget multiple (1.5; 3 in v0.5).
        tf32: whether the harness sets TF32 matmul precision on CUDA.
        summary_step_time: 'median' (v1.0 scorer: nanmedian of per-eval step times) or 'last'.
    """

    name: str
    hardware: str
    base_workloads: Tuple[str, ...]
    held_out_workloads: Tuple[str, ...]
    timing: Mapping[str, Tuple[int, int]]
    step_hints: Mapping[str, int]
    self_tuning_budget_factor: float
    tf32: bool
    summary_step_time: str

    @property
    def num_base_workloads(self) -> int:
        return len(self.base_workloads)

    def budget(self, base_workload: str) -> Optional[int]:
        entry = self.timing.get(base_workload)
        return None if entry is None else entry[0]

    def eval_period(self, base_workload: str) -> Optional[int]:
        entry = self.timing.get(base_workload)
        return None if entry is None else entry[1]


_V06_TIMING = {
    'criteo1tb': (7_703, 120),
    'fastmri': (4_430, 80),
    'imagenet_resnet': (66_159, 510),
    'imagenet_vit': (69_768, 420),
    'librispeech_conformer': (58_015, 1_440),
    'librispeech_deepspeech': (44_405, 1_440),
    'ogbg': (12_011, 240),
    'wmt': (43_336, 840),
}

VERSIONS: Dict[str, BenchmarkVersion] = {
    '1.0': BenchmarkVersion(
        name='1.0',
        hardware='4x NVIDIA A100 (40 GB)',
        base_workloads=_NINE,
        held_out_workloads=(),
        timing={
            'criteo1tb': (8_915, 356),
            'fastmri': (2_745, 110),
            'imagenet_resnet': (49_918, 1_996),
            'imagenet_vit': (64_292, 2_571),
            'librispeech_conformer': (43_680, 1_747),
            'librispeech_deepspeech': (36_949, 1_447),
            # 31,967 / 2,571 is ~12 evals, not the ~25 of the others: upstream's value, kept.
            'finewebedu_lm': (31_967, 2_571),
            'ogbg': (11_303, 452),
            'wmt': (16_114, 644),
        },
        step_hints={},
        self_tuning_budget_factor=1.5,
        tf32=True,
        summary_step_time='median',
    ),
    '0.6': BenchmarkVersion(
        name='0.6',
        hardware='8x NVIDIA V100 (16 GB)',
        base_workloads=_EIGHT,
        held_out_workloads=(),
        timing=_V06_TIMING,
        step_hints={},
        self_tuning_budget_factor=1.5,
        tf32=False,
        summary_step_time='last',
    ),
    '0.5': BenchmarkVersion(
        name='0.5',
        hardware='8x NVIDIA V100 (16 GB)',
        base_workloads=_EIGHT,
        held_out_workloads=V05_HELD_OUT,
        timing={
            'criteo1tb': (7_703, 120),
            'fastmri': (8_859, 80),
            'imagenet_resnet': (63_008, 510),
            'imagenet_vit': (77_520, 420),
            'librispeech_conformer': (61_068, 1_440),
            'librispeech_deepspeech': (55_506, 1_440),
            'ogbg': (18_477, 240),
            'wmt': (48_151, 840),
        },
        step_hints={
            'criteo1tb': 10_666, 'fastmri': 36_189, 'imagenet_resnet': 186_666, 'imagenet_vit': 186_666,
            'librispeech_conformer': 80_000, 'librispeech_deepspeech': 48_000, 'ogbg': 80_000, 'wmt': 133_333,
        },
        self_tuning_budget_factor=3.0,
        tf32=False,
        summary_step_time='last',
    ),
}


class UnknownVersionError(UserError):
    """A --benchmark_version that is not one of VERSIONS."""


def get(version: Optional[str] = None) -> BenchmarkVersion:
    """The rules of `version` (default: DEFAULT_VERSION); accepts '1', 'v1.0', '0.6', ..."""
    name = DEFAULT_VERSION if version in (None, '') else str(version).strip().lstrip('v')
    if name == '1':
        name = '1.0'
    if name not in VERSIONS:
        raise UnknownVersionError(
            f'--benchmark_version={version!r}: unknown version; choose one of {", ".join(VERSIONS)}.'
        )
    return VERSIONS[name]


def apply(spec, version: Optional[str] = None):
    """`spec` (a WorkloadSpec) with the budget, eval period and step hint of `version`.

    Base workloads and their variants take the version's values for their base, and its
    self-tuning budget factor; dev and test workloads are returned unchanged, and a workload the
    version does not time (`finewebedu_lm` under 0.5/0.6) keeps its own budget.
    """
    rules = get(version)
    timing = rules.timing.get(spec.base_workload)
    if spec.kind.value in ('dev', 'test'):
        return spec
    changes: Dict[str, object] = {}
    if spec.self_tuning_budget_factor != rules.self_tuning_budget_factor:
        changes['self_tuning_budget_factor'] = rules.self_tuning_budget_factor
    if timing is None:
        return dataclasses.replace(spec, **changes) if changes else spec
    budget, eval_period = timing
    changes.update({'max_allowed_runtime_sec': budget, 'eval_period_time_sec': eval_period})
    if spec.base_workload in rules.step_hints:
        changes['step_hint'] = rules.step_hints[spec.base_workload]
    return dataclasses.replace(spec, **changes)
