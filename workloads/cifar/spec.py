"""CIFAR-10 ResNet-18: torch-free metadata of the development workload.

Values are upstream AlgoPerf v0.6 (snapshot 2c90454, spec §6.0/§6.9): the base
class `BaseCifarWorkload` plus `cifar_pytorch/workload.py`. Not a scored
workload; upstream never ran target setting on it (its step hint is 100 epochs
at batch size 1,024).
"""

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

CIFAR = WorkloadSpec(
    name='cifar',
    base_workload='cifar',
    kind=WorkloadKind.DEV,
    impl='workloads.cifar.workload:CifarWorkload',
    dataset='CIFAR-10',
    target_metric_name='accuracy',
    higher_is_better=True,
    validation_target_value=0.85,
    test_target_value=0.85,
    loss_type='SOFTMAX_CROSS_ENTROPY',
    max_allowed_runtime_sec=3_600,
    eval_period_time_sec=600,
    # ceil(50_000 * 100 / 1_024): upstream's "100 epochs at batch size 1024"
    # counts the full 50,000-image train set, not the 45,000 used to train.
    step_hint=4_883,
    eval_batch_size=1_024,
    num_train_examples=45_000,  # First 45,000 images of the train set.
    num_eval_train_examples=5_120,  # ceil(5_000 / 1_024) * 1_024.
    num_validation_examples=5_000,  # Last 5,000 images of the train set.
    num_test_examples=10_000,
    compile_model=True,
    compile_loss=False,
    # Upstream's train_mean/train_stddev are per-channel tuples
    # (0.49139968, 0.48215827, 0.44653124) / (0.24703233, 0.24348505,
    # 0.26158768), not primitives, so they are left None here.
    extra={
        'crop_size': 32,
        'padding_size': 4,
    },
    notes='upstream v0.6 (2c90454) CifarWorkload (development workload; no upstream logs)',
)

SPECS = {s.name: s for s in (CIFAR,)}
