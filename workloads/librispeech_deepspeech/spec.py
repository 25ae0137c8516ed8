"""LibriSpeech DeepSpeech: torch-free metadata of the base workload and its variants.

Values are upstream AlgoPerf v0.6 (snapshot 2c90454, spec §6.0/§6.6). Upstream's
`LibriSpeechDeepSpeechWorkload` subclasses the PyTorch Conformer workload, so
it shares the LibriSpeech data, splits, eval batch size and eval period, and
overrides targets, budget, step hint and the DeepSpeech model switches. Every
`extra` key is one upstream's logger writes into `meta_data_*.json`.
"""

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

_IMPL = 'workloads.librispeech_deepspeech.workload:'

LIBRISPEECH_DEEPSPEECH = WorkloadSpec(
    name='librispeech_deepspeech',
    base_workload='librispeech_deepspeech',
    kind=WorkloadKind.BASE,
    impl=_IMPL + 'LibriSpeechDeepSpeechWorkload',
    dataset='LibriSpeech 960h',
    target_metric_name='wer',
    higher_is_better=False,
    validation_target_value=0.119936,
    test_target_value=0.074143,
    loss_type='CTC_LOSS',
    data_tool='workloads.librispeech_conformer.convert:main',  # Upstream's preprocessed layout.
    max_allowed_runtime_sec=44_405,
    eval_period_time_sec=1_440,
    # v0.6 value (spec §6.0, v0.6 logs); the stored upstream PyTorch file
    # (commit 03bc79e) still has the v0.5 hint 48_000.
    step_hint=38_400,
    eval_batch_size=256,
    num_train_examples=263_840,
    num_eval_train_examples=5_376,  # ceil(5_348 / 256) * 256.
    num_validation_examples=5_348,
    num_test_examples=2_472,
    # Model not compiled (`compile_error_workloads`), loss compiled (spec §5.5).
    compile_model=False,
    compile_loss=True,
    extra={
        # Inherited from the Conformer workload; the DeepSpeech model ignores
        # them, but upstream logs them.
        'attention_temperature': 1.0,
        'use_gelu': False,
        'use_post_layer_norm': True,
        'use_specaug': True,
        # DeepSpeech model switches.
        'use_tanh': False,
        'enable_residual_connections': True,
        'enable_decoder_layer_norm': True,
        'layernorm_everywhere': False,
        'freq_mask_count': 2,
        'time_mask_count': 10,
        # `eval_num_workers` and `requires_sync_before_eval` are logged too but
        # are runtime state (see librispeech_conformer).
    },
    notes='upstream v0.6 (2c90454) LibriSpeechDeepSpeechWorkload; matches v0.6 meta_data logs',
)

LIBRISPEECH_DEEPSPEECH_TANH = LIBRISPEECH_DEEPSPEECH.variant(
    name='librispeech_deepspeech_tanh',
    impl=_IMPL + 'LibriSpeechDeepSpeechTanhWorkload',
    validation_target_value=0.150883,
    test_target_value=0.098613,
    extra={**LIBRISPEECH_DEEPSPEECH.extra, 'use_tanh': True},
    notes='upstream v0.6 LibriSpeechDeepSpeechTanhWorkload',
)

LIBRISPEECH_DEEPSPEECH_NO_RESNET = LIBRISPEECH_DEEPSPEECH.variant(
    name='librispeech_deepspeech_no_resnet',
    impl=_IMPL + 'LibriSpeechDeepSpeechNoResNetWorkload',
    validation_target_value=0.131564,
    test_target_value=0.079297,
    extra={**LIBRISPEECH_DEEPSPEECH.extra, 'enable_residual_connections': False},
    notes='upstream v0.6 LibriSpeechDeepSpeechNoResNetWorkload',
)

# The only upstream variant that overrides the eval batch size (128 instead of
# 256). The rounded eval_train count stays 5_376: ceil(5_348 / 128) * 128.
LIBRISPEECH_DEEPSPEECH_NORM_AND_SPEC_AUG = LIBRISPEECH_DEEPSPEECH.variant(
    name='librispeech_deepspeech_norm_and_spec_aug',
    impl=_IMPL + 'LibriSpeechDeepSpeechNormAndSpecAugWorkload',
    validation_target_value=0.14342,
    test_target_value=0.090976,
    eval_batch_size=128,
    num_eval_train_examples=5_376,
    extra={
        **LIBRISPEECH_DEEPSPEECH.extra,
        'enable_decoder_layer_norm': False,
        'layernorm_everywhere': True,
        'freq_mask_count': 4,
        'time_mask_count': 15,
    },
    notes='upstream v0.6 LibriSpeechDeepSpeechNormAndSpecAugWorkload (eval batch size 128)',
)

SPECS = {
    s.name: s
    for s in (
        LIBRISPEECH_DEEPSPEECH,
        LIBRISPEECH_DEEPSPEECH_TANH,
        LIBRISPEECH_DEEPSPEECH_NO_RESNET,
        LIBRISPEECH_DEEPSPEECH_NORM_AND_SPEC_AUG,
    )
}
