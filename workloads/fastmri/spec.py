"""fastMRI U-Net: torch-free metadata of the base workload and its variants.

Values are upstream AlgoPerf v0.6 (snapshot 2c90454, spec §6.0/§6.2): the base
class `BaseFastMRIWorkload` plus `fastmri_pytorch/workload.py`, which overrides
no metadata on the base and only the targets and model switches on variants.
Every `extra` key is one upstream's logger writes into `meta_data_*.json`.
"""

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

_IMPL = 'workloads.fastmri.workload:'

FASTMRI = WorkloadSpec(
    name='fastmri',
    base_workload='fastmri',
    kind=WorkloadKind.BASE,
    impl=_IMPL + 'FastMRIWorkload',
    dataset='fastMRI knee singlecoil',
    target_metric_name='ssim',
    higher_is_better=True,
    validation_target_value=0.723653,
    test_target_value=0.740633,
    loss_type='MEAN_ABSOLUTE_ERROR',
    max_allowed_runtime_sec=4_430,
    eval_period_time_sec=80,
    # v0.6 value (spec §6.0, v0.6 logs). The stored upstream base file
    # (commit 03bc79e) already has the v0.6 budget but still the v0.5 hint
    # 36_189; the v0.6 snapshot and its logs have 18_094.
    step_hint=18_094,
    eval_batch_size=256,
    num_train_examples=34_742,
    num_eval_train_examples=3_584,  # ceil(3_554 / 256) * 256.
    num_validation_examples=3_554,  # First 100 sorted val volumes.
    num_test_examples=3_581,  # Remaining 99 val volumes.
    compile_model=True,
    compile_loss=True,
    # train_mean/train_stddev raise NotImplementedError upstream (see criteo1tb).
    extra={
        'num_channels': 32,
        'num_pool_layers': 4,
        'use_layer_norm': False,
        'use_tanh': False,
    },
    notes='upstream v0.6 (2c90454) FastMRIWorkload; matches v0.6 meta_data logs',
)

FASTMRI_MODEL_SIZE = FASTMRI.variant(
    name='fastmri_model_size',
    impl=_IMPL + 'FastMRIModelSizeWorkload',
    validation_target_value=0.723559,
    test_target_value=0.740726,
    extra={**FASTMRI.extra, 'num_channels': 64, 'num_pool_layers': 3},
    notes='upstream v0.6 FastMRIModelSizeWorkload',
)

FASTMRI_TANH = FASTMRI.variant(
    name='fastmri_tanh',
    impl=_IMPL + 'FastMRITanhWorkload',
    validation_target_value=0.717840,
    test_target_value=0.734505,
    extra={**FASTMRI.extra, 'use_tanh': True},
    notes='upstream v0.6 FastMRITanhWorkload; matches v0.5 meta_data logs',
)

FASTMRI_LAYERNORM = FASTMRI.variant(
    name='fastmri_layernorm',
    impl=_IMPL + 'FastMRILayerNormWorkload',
    validation_target_value=0.723284,
    test_target_value=0.739996,
    extra={**FASTMRI.extra, 'use_layer_norm': True},
    notes='upstream v0.6 FastMRILayerNormWorkload',
)

SPECS = {
    s.name: s
    for s in (
        FASTMRI,
        FASTMRI_MODEL_SIZE,
        FASTMRI_TANH,
        FASTMRI_LAYERNORM,
    )
}
