"""Workload specs match upstream AlgoPerf v0.6: the spec document, the registry, real logs.

The expected numbers below are transcribed by hand from the spec document
(`reference/algoperf_spec.md`: the §6.0 table and example counts, §5.5 and
§6.1-6.9), a source independent of the code under test. The meta_data files
in `tests/data/upstream_meta_data/` are verbatim copies of upstream's own run
logs, so the tests need no access to the shared log archive:

- `<base>_pytorch_meta_data_0.json`: AlgoPerf v0.6 leaderboard logs,
  `algoperf_v06/external_tuning/shampoo/study_0/<base>_pytorch/trial_1/`.
- `v05/<variant>_pytorch_meta_data_0.json`: AlgoPerf v0.5 held-out variant
  logs, `algoperf_v05/external_tuning/lawa_ema/study_0/<variant>_pytorch/trial_1/`
  (v0.5 budgets and step hints differ from v0.6, so those keys are skipped).

No test imports torch.
"""

from __future__ import annotations

import importlib
import json
import math
import pathlib
import subprocess
import sys
from typing import Any, NamedTuple

import pytest

from algoperf import registry
from algoperf.workload_spec import WorkloadKind, WorkloadSpec

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
META_DATA_DIR = pathlib.Path(__file__).resolve().parent / 'data' / 'upstream_meta_data'

FAMILIES = (
    'criteo1tb',
    'fastmri',
    'imagenet_resnet',
    'imagenet_vit',
    'librispeech_conformer',
    'librispeech_deepspeech',
    'ogbg',
    'wmt',
    'cifar',
)
SPEC_MODULES = tuple(f'workloads.{f}.spec' for f in FAMILIES)

# The document prints upstream's target expressions rounded (e.g. `1 - 0.3481`,
# which is 0.6518999999999999 in float64, appears as 0.6519); allow float
# representation error only, nothing a real target change could hide in.
DOC_FLOAT_RTOL = 1e-12


def _all_specs() -> dict[str, WorkloadSpec]:
    specs: dict[str, WorkloadSpec] = {}
    for module in SPEC_MODULES:
        specs.update(importlib.import_module(module).SPECS)
    return specs


ALL_SPECS = _all_specs()


def _family_of(module: str) -> str:
    return module.split('.')[1]


# (a) Base workloads, from the §6.0 table, "Example counts" and the
# `num_eval_train_examples` line under it. Budgets, eval periods and step
# hints are the v0.6 values (not the bracketed v0.5 ones); eval batch sizes
# are the PyTorch ones.
class _Expected(NamedTuple):
    metric: str
    higher_is_better: bool
    validation_target: float
    test_target: float
    loss_type: str
    budget_sec: int
    eval_period_sec: int
    step_hint: int
    eval_batch_size: int
    num_train: int
    num_eval_train: int
    num_validation: int
    num_test: int


# One row per workload, fields grouped as in the document's table.
# fmt: off
DOC_BASES = {
    'criteo1tb': _Expected(
        'loss', False, 0.123735, 0.126041, 'SIGMOID_CROSS_ENTROPY',
        7_703, 120, 10_666, 8_192,
        4_195_197_692, 83_279_872, 83_274_637, 95_000_000,
    ),
    'fastmri': _Expected(
        'ssim', True, 0.723653, 0.740633, 'MEAN_ABSOLUTE_ERROR',
        4_430, 80, 18_094, 256,
        34_742, 3_584, 3_554, 3_581,
    ),
    'imagenet_resnet': _Expected(
        'accuracy', True, 0.77431, 0.6560, 'SOFTMAX_CROSS_ENTROPY',
        66_159, 510, 195_999, 1_024,
        1_281_167, 50_176, 50_000, 10_000,
    ),
    'imagenet_vit': _Expected(
        'accuracy', True, 0.77309, 0.6519, 'SOFTMAX_CROSS_ENTROPY',
        69_768, 420, 167_999, 2_048,
        1_281_167, 51_200, 50_000, 10_000,
    ),
    'librispeech_conformer': _Expected(
        'wer', False, 0.085884, 0.052981, 'CTC_LOSS',
        58_015, 1_440, 76_000, 256,
        263_840, 5_376, 5_348, 2_472,
    ),
    'librispeech_deepspeech': _Expected(
        'wer', False, 0.119936, 0.074143, 'CTC_LOSS',
        44_405, 1_440, 38_400, 256,
        263_840, 5_376, 5_348, 2_472,
    ),
    # Declared SOFTMAX_CROSS_ENTROPY upstream although the loss is sigmoid BCE.
    'ogbg': _Expected(
        'mean_average_precision', True, 0.28098, 0.268729, 'SOFTMAX_CROSS_ENTROPY',
        12_011, 240, 52_000, 32_768,
        350_343, 43_793, 43_793, 43_793,
    ),
    'wmt': _Expected(
        'bleu', True, 30.8491, 30.7219, 'SOFTMAX_CROSS_ENTROPY',
        43_336, 840, 120_000, 128,
        5_906_184, 3_072, 3_000, 3_003,
    ),
    # Development workload (§6.0 last row, §6.9).
    'cifar': _Expected(
        'accuracy', True, 0.85, 0.85, 'SOFTMAX_CROSS_ENTROPY',
        3_600, 600, 4_883, 1_024,
        45_000, 5_120, 5_000, 10_000,
    ),
}
# fmt: on

# (b) Variant (validation, test) targets, from §6.1-6.8.
DOC_VARIANT_TARGETS = {
    'criteo1tb_layernorm': (0.123757, 0.126152),
    'criteo1tb_resnet': (0.12415, 0.12648),
    'criteo1tb_embed_init': (0.129657, 0.131967),
    'fastmri_model_size': (0.723559, 0.740726),
    'fastmri_tanh': (0.717840, 0.734505),
    'fastmri_layernorm': (0.723284, 0.739996),
    'imagenet_resnet_silu': (0.75445, 0.6323),
    'imagenet_resnet_gelu': (0.76765, 0.6519),
    'imagenet_resnet_large_bn_init': (0.76526, 0.6423),
    'imagenet_vit_glu': (0.75738, 0.6359),
    'imagenet_vit_post_ln': (0.75312, 0.6286),
    'imagenet_vit_map': (0.77113, 0.6523),
    'librispeech_conformer_attention_temperature': (0.109977, 0.068065),
    'librispeech_conformer_layernorm': (0.09731, 0.05996),
    'librispeech_conformer_gelu': (0.094114, 0.056629),
    'librispeech_deepspeech_tanh': (0.150883, 0.098613),
    'librispeech_deepspeech_no_resnet': (0.131564, 0.079297),
    'librispeech_deepspeech_norm_and_spec_aug': (0.14342, 0.090976),
    'ogbg_gelu': (0.27771, 0.262926),
    'ogbg_silu': (0.282178, 0.272144),
    'ogbg_model_size': (0.269446, 0.253051),
    'wmt_post_ln': (30.0779, 29.8982),
    # 229.4143 is upstream's typo, kept on purpose.
    'wmt_attention_temp': (29.3379, 229.4143),
    'wmt_glu_tanh': (29.5779, 29.0515),
}

# The only variant that overrides a base's eval batch size (§6.6).
DOC_VARIANT_EVAL_BATCH_SIZE = {'librispeech_deepspeech_norm_and_spec_aug': 128}

# §5.5: which bases upstream torch.compiles (model, loss); variants inherit.
DOC_COMPILE_POLICY = {
    'criteo1tb': (False, False),
    'fastmri': (True, True),
    'imagenet_resnet': (True, False),
    'imagenet_vit': (False, False),
    'librispeech_conformer': (False, False),
    'librispeech_deepspeech': (False, True),
    'ogbg': (False, True),
    'wmt': (True, True),
    'cifar': (True, False),
}

# Upstream's PyTorch class for every name (upstream's workload registry).
UPSTREAM_CLASSES = {
    'criteo1tb': 'Criteo1TbDlrmSmallWorkload',
    'criteo1tb_test': 'Criteo1TbDlrmSmallTestWorkload',
    'criteo1tb_layernorm': 'Criteo1TbDlrmSmallLayerNormWorkload',
    'criteo1tb_embed_init': 'Criteo1TbDlrmSmallEmbedInitWorkload',
    'criteo1tb_resnet': 'Criteo1TbDlrmSmallResNetWorkload',
    'fastmri': 'FastMRIWorkload',
    'fastmri_model_size': 'FastMRIModelSizeWorkload',
    'fastmri_tanh': 'FastMRITanhWorkload',
    'fastmri_layernorm': 'FastMRILayerNormWorkload',
    'imagenet_resnet': 'ImagenetResNetWorkload',
    'imagenet_resnet_silu': 'ImagenetResNetSiLUWorkload',
    'imagenet_resnet_gelu': 'ImagenetResNetGELUWorkload',
    'imagenet_resnet_large_bn_init': 'ImagenetResNetLargeBNScaleWorkload',
    'imagenet_vit': 'ImagenetVitWorkload',
    'imagenet_vit_glu': 'ImagenetVitGluWorkload',
    'imagenet_vit_post_ln': 'ImagenetVitPostLNWorkload',
    'imagenet_vit_map': 'ImagenetVitMapWorkload',
    'librispeech_conformer': 'LibriSpeechConformerWorkload',
    'librispeech_conformer_attention_temperature': (
        'LibriSpeechConformerAttentionTemperatureWorkload'
    ),
    'librispeech_conformer_layernorm': 'LibriSpeechConformerLayerNormWorkload',
    'librispeech_conformer_gelu': 'LibriSpeechConformerGeluWorkload',
    'librispeech_deepspeech': 'LibriSpeechDeepSpeechWorkload',
    'librispeech_deepspeech_tanh': 'LibriSpeechDeepSpeechTanhWorkload',
    'librispeech_deepspeech_no_resnet': 'LibriSpeechDeepSpeechNoResNetWorkload',
    'librispeech_deepspeech_norm_and_spec_aug': 'LibriSpeechDeepSpeechNormAndSpecAugWorkload',
    'ogbg': 'OgbgWorkload',
    'ogbg_gelu': 'OgbgGeluWorkload',
    'ogbg_silu': 'OgbgSiluWorkload',
    'ogbg_model_size': 'OgbgModelSizeWorkload',
    'wmt': 'WmtWorkload',
    'wmt_post_ln': 'WmtWorkloadPostLN',
    'wmt_attention_temp': 'WmtWorkloadAttentionTemp',
    'wmt_glu_tanh': 'WmtWorkloadGLUTanH',
    'cifar': 'CifarWorkload',
}

VARIANT_NAMES = sorted(n for n, s in ALL_SPECS.items() if n != s.base_workload)


def _doc_approx(value: float):
    return pytest.approx(value, rel=DOC_FLOAT_RTOL, abs=0)


# (a) -------------------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(DOC_BASES))
def test_base_matches_spec_document(name: str) -> None:
    spec = ALL_SPECS[name]
    want = DOC_BASES[name]
    assert spec.target_metric_name == want.metric
    assert spec.higher_is_better is want.higher_is_better
    assert spec.validation_target_value == _doc_approx(want.validation_target)
    assert spec.test_target_value == _doc_approx(want.test_target)
    assert spec.loss_type == want.loss_type
    assert spec.max_allowed_runtime_sec == want.budget_sec
    assert spec.eval_period_time_sec == want.eval_period_sec
    assert spec.step_hint == want.step_hint
    assert spec.eval_batch_size == want.eval_batch_size
    assert spec.num_train_examples == want.num_train
    assert spec.num_eval_train_examples == want.num_eval_train
    assert spec.num_validation_examples == want.num_validation
    assert spec.num_test_examples == want.num_test


V06_BASES = ('criteo1tb', 'fastmri', 'imagenet_resnet', 'imagenet_vit', 'librispeech_conformer',
             'librispeech_deepspeech', 'ogbg', 'wmt')


def test_every_base_workload_is_in_the_document_table() -> None:
    # v1.0 added finewebedu_lm (tests/workloads/test_finewebedu_lm_spec.py); the v0.6 table has the rest.
    assert set(registry.BASE_WORKLOADS) - {'finewebedu_lm'} == set(V06_BASES) <= set(DOC_BASES)


# (b) -------------------------------------------------------------------------


def test_variant_table_covers_every_variant() -> None:
    # criteo1tb_test is a CI copy with the base's targets, not a §6 variant.
    assert set(DOC_VARIANT_TARGETS) == set(VARIANT_NAMES) - {'criteo1tb_test'}


@pytest.mark.parametrize('name', sorted(DOC_VARIANT_TARGETS))
def test_variant_targets_match_spec_document(name: str) -> None:
    spec = ALL_SPECS[name]
    validation, test = DOC_VARIANT_TARGETS[name]
    assert spec.validation_target_value == _doc_approx(validation)
    assert spec.test_target_value == _doc_approx(test)


def test_wmt_attention_temp_keeps_upstream_test_target_typo() -> None:
    assert ALL_SPECS['wmt_attention_temp'].test_target_value == 229.4143


# (c) -------------------------------------------------------------------------


def test_registered_names_have_specs() -> None:
    for name, module in registry._SPEC_MODULES.items():
        if module in SPEC_MODULES:
            assert name in importlib.import_module(module).SPECS, (name, module)


@pytest.mark.parametrize('module', SPEC_MODULES)
def test_spec_keys_are_registered_to_their_module(module: str) -> None:
    specs = importlib.import_module(module).SPECS
    assert specs, module
    for key, spec in specs.items():
        assert registry._SPEC_MODULES.get(key) == module, key
        assert isinstance(spec, WorkloadSpec)
        assert spec.name == key
        assert registry.get_spec(key) is spec


@pytest.mark.parametrize('name', sorted(ALL_SPECS))
def test_kind_base_and_impl(name: str) -> None:
    spec = ALL_SPECS[name]
    family = _family_of(registry._SPEC_MODULES[name])
    assert spec.impl == f'workloads.{family}.workload:{UPSTREAM_CLASSES[name]}'
    if name == 'cifar':
        assert (spec.kind, spec.base_workload) == (WorkloadKind.DEV, 'cifar')
        return
    assert spec.base_workload == family
    assert spec.base_workload in registry.BASE_WORKLOADS
    assert ALL_SPECS[spec.base_workload].kind == WorkloadKind.BASE
    if name in registry.BASE_WORKLOADS:
        assert spec.kind == WorkloadKind.BASE
    elif name == 'criteo1tb_test':
        assert spec.kind == WorkloadKind.TEST
    else:
        assert spec.kind == WorkloadKind.VARIANT


@pytest.mark.parametrize('name', VARIANT_NAMES)
def test_variant_shares_what_upstream_does_not_override(name: str) -> None:
    # Upstream's variant classes override only targets, model switches and
    # (once) the eval batch size; budget, eval period, step hint, data and
    # compile policy come from the base class (and the base-name match of the
    # runner's compile lists).
    spec = ALL_SPECS[name]
    base = ALL_SPECS[spec.base_workload]
    for field in (
        'max_allowed_runtime_sec',
        'eval_period_time_sec',
        'step_hint',
        'target_metric_name',
        'higher_is_better',
        'loss_type',
        'dataset',
        'num_train_examples',
        'num_eval_train_examples',
        'num_validation_examples',
        'num_test_examples',
        'compile_model',
        'compile_loss',
        'train_mean',
        'train_stddev',
    ):
        assert getattr(spec, field) == getattr(base, field), field
    want_eval_bs = DOC_VARIANT_EVAL_BATCH_SIZE.get(name, base.eval_batch_size)
    assert spec.eval_batch_size == want_eval_bs
    # A variant changes switches, never which switches exist.
    assert set(spec.extra) - {'embedding_init_multiplier'} == set(base.extra)


@pytest.mark.parametrize('name', sorted(ALL_SPECS))
def test_eval_train_size_is_validation_rounded_up_to_eval_batches(name: str) -> None:
    spec = ALL_SPECS[name]
    if spec.base_workload == 'ogbg':
        # ogbg's batches are packed by node/edge budgets; upstream uses the
        # validation size as is.
        assert spec.num_eval_train_examples == spec.num_validation_examples
        return
    batches = math.ceil(spec.num_validation_examples / spec.eval_batch_size)
    assert spec.num_eval_train_examples == batches * spec.eval_batch_size


@pytest.mark.parametrize('name', sorted(ALL_SPECS))
def test_compile_policy_matches_spec_document(name: str) -> None:
    spec = ALL_SPECS[name]
    assert (spec.compile_model, spec.compile_loss) == DOC_COMPILE_POLICY[spec.base_workload]


def test_extra_holds_only_primitives() -> None:
    # Mirrors upstream's logger, which records only float/int/str/bool.
    for name, spec in ALL_SPECS.items():
        for key, value in spec.extra.items():
            assert isinstance(value, (bool, int, float, str)), (name, key, value)


# (d) -------------------------------------------------------------------------


def test_spec_modules_import_without_torch() -> None:
    code = (
        'import sys, importlib\n'
        f'[importlib.import_module(m) for m in {list(SPEC_MODULES)!r}]\n'
        'from algoperf import registry\n'
        f'[registry.get_spec(n) for n in {sorted(ALL_SPECS)!r}]\n'
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        'assert not leaked, leaked\n'
    )
    result = subprocess.run(
        [sys.executable, '-c', code],
        check=False,  # The assert below shows stderr instead of a bare exit code.
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# (e) -------------------------------------------------------------------------

# Logged `workload.<key>`s that are not constant properties of the workload.
NON_CONSTANT_LOG_KEYS = {
    # Upstream raises NotImplementedError (or returns a tuple) for these, but
    # its logger reuses the previous key's value when a getter raises, so the
    # logs show test_target_value (or time_mask_count) under these names.
    'train_mean',
    'train_stddev',
    # The runner's --eval_num_workers flag, set on the instance.
    'eval_num_workers',
    # Set by init_model_fn: True only when the model is DDP-wrapped.
    'requires_sync_before_eval',
}
# v0.5 logs carry the v0.5 budgets and step hints (spec §6.0 brackets).
V05_ONLY_LOG_KEYS = {'max_allowed_runtime_sec', 'step_hint'}

V05_VARIANT_LOGS = (
    'criteo1tb_embed_init',
    'fastmri_tanh',
    'imagenet_resnet_large_bn_init',
    'librispeech_conformer_layernorm',
    'ogbg_model_size',
    'wmt_glu_tanh',
)


def _logged_properties(path: pathlib.Path) -> dict[str, Any]:
    with open(path) as f:
        meta_data = json.load(f)
    prefix = 'workload.'
    return {k[len(prefix) :]: v for k, v in meta_data.items() if k.startswith(prefix)}


def _assert_log_matches_spec(spec: WorkloadSpec, logged: dict[str, Any], skip: set) -> None:
    props = spec.workload_properties()
    checked = set()
    for key, value in logged.items():
        if key in skip:
            continue
        assert key in props, f'{spec.name}: logged workload.{key} is not in the spec'
        # Same type too: upstream logs e.g. bn_init_scale as 0.0, not 0.
        assert (type(props[key]), props[key]) == (type(value), value), key
        checked.add(key)
    # Every logged constant is in the spec, and the spec invents no extra keys.
    assert set(spec.extra) <= checked, set(spec.extra) - checked


@pytest.mark.parametrize('name', V06_BASES)
def test_base_matches_upstream_v06_log(name: str) -> None:
    logged = _logged_properties(META_DATA_DIR / f'{name}_pytorch_meta_data_0.json')
    assert logged, name
    _assert_log_matches_spec(ALL_SPECS[name], logged, NON_CONSTANT_LOG_KEYS)


@pytest.mark.parametrize('name', V05_VARIANT_LOGS)
def test_variant_matches_upstream_v05_log(name: str) -> None:
    logged = _logged_properties(META_DATA_DIR / 'v05' / f'{name}_pytorch_meta_data_0.json')
    assert logged, name
    _assert_log_matches_spec(ALL_SPECS[name], logged, NON_CONSTANT_LOG_KEYS | V05_ONLY_LOG_KEYS)
