"""Criteo 1TB DLRM-small: torch-free metadata of the base workload and its variants.

Values are upstream AlgoPerf v0.6 (snapshot 2c90454, spec §6.0/§6.1): the base
class `BaseCriteo1TbDlrmSmallWorkload` plus the PyTorch overrides in
`criteo1tb_pytorch/workload.py` (eval batch size 8,192; JAX uses 131,072, which
also changes `num_eval_train_examples`). Every `extra` key is one upstream's
logger writes into `meta_data_*.json` as `workload.<key>`.
"""

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

_IMPL = 'workloads.criteo1tb.workload:'

CRITEO1TB = WorkloadSpec(
    name='criteo1tb',
    base_workload='criteo1tb',
    kind=WorkloadKind.BASE,
    impl=_IMPL + 'Criteo1TbDlrmSmallWorkload',
    dataset='Criteo 1TB click logs',
    target_metric_name='loss',
    higher_is_better=False,
    validation_target_value=0.123735,
    test_target_value=0.126041,
    loss_type='SIGMOID_CROSS_ENTROPY',
    max_allowed_runtime_sec=7_703,
    eval_period_time_sec=120,
    step_hint=10_666,
    eval_batch_size=8_192,
    num_train_examples=4_195_197_692,
    # ceil(83_274_637 / 8_192) * 8_192: validation size rounded up to whole
    # PyTorch eval batches, so eval_train needs no partial batch.
    num_eval_train_examples=83_279_872,
    num_validation_examples=83_274_637,
    num_test_examples=95_000_000,
    # Not compiled upstream (listed in `compile_error_workloads`, spec §5.5).
    compile_model=False,
    compile_loss=False,
    # train_mean/train_stddev raise NotImplementedError upstream. The v0.6 logs
    # still show them (equal to test_target_value) only because upstream's
    # logger reuses the previous property's value when a getter raises.
    extra={
        'vocab_size': 4_194_304,  # 32 * 128 * 1024 rows, stored as 4 chunks.
        'embed_dim': 128,
        'num_dense_features': 13,
        'use_layer_norm': False,
        'use_resnet': False,
        # `embedding_init_multiplier` is None on the base (init scale
        # 1/sqrt(vocab_size)); None is not logged, so only the variant has it.
    },
    notes='upstream v0.6 (2c90454) Criteo1TbDlrmSmallWorkload; matches v0.6 meta_data logs',
)

# CI-only copy: upstream shrinks the table to 32 * 128 * 16 rows and keeps the
# rest, including the full-size split counts and targets.
CRITEO1TB_TEST = CRITEO1TB.variant(
    name='criteo1tb_test',
    kind=WorkloadKind.TEST,
    impl=_IMPL + 'Criteo1TbDlrmSmallTestWorkload',
    extra={**CRITEO1TB.extra, 'vocab_size': 65_536},
    notes='upstream v0.6 Criteo1TbDlrmSmallTestWorkload (CI only: vocab 32*128*16)',
)

CRITEO1TB_LAYERNORM = CRITEO1TB.variant(
    name='criteo1tb_layernorm',
    impl=_IMPL + 'Criteo1TbDlrmSmallLayerNormWorkload',
    validation_target_value=0.123757,
    test_target_value=0.126152,
    extra={**CRITEO1TB.extra, 'use_layer_norm': True},
    notes='upstream v0.6 Criteo1TbDlrmSmallLayerNormWorkload',
)

CRITEO1TB_EMBED_INIT = CRITEO1TB.variant(
    name='criteo1tb_embed_init',
    impl=_IMPL + 'Criteo1TbDlrmSmallEmbedInitWorkload',
    validation_target_value=0.129657,
    test_target_value=0.131967,
    extra={**CRITEO1TB.extra, 'embedding_init_multiplier': 1.0},
    notes='upstream v0.6 Criteo1TbDlrmSmallEmbedInitWorkload; matches v0.5 meta_data logs',
)

# DLRMResNet: bottom MLP (256, 256, 256), top (256, 256, 256, 256, 1); the dims
# are tuples upstream, so the logger (and this spec) omit them.
CRITEO1TB_RESNET = CRITEO1TB.variant(
    name='criteo1tb_resnet',
    impl=_IMPL + 'Criteo1TbDlrmSmallResNetWorkload',
    validation_target_value=0.12415,
    test_target_value=0.12648,
    extra={**CRITEO1TB.extra, 'use_resnet': True},
    notes='upstream v0.6 Criteo1TbDlrmSmallResNetWorkload',
)

SPECS = {
    s.name: s
    for s in (
        CRITEO1TB,
        CRITEO1TB_TEST,
        CRITEO1TB_LAYERNORM,
        CRITEO1TB_EMBED_INIT,
        CRITEO1TB_RESNET,
    )
}
