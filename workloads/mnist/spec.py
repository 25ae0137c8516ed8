"""MNIST: upstream's development workload values (spec §6.9), torch-free."""

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

MNIST = WorkloadSpec(
    name='mnist',
    base_workload='mnist',
    kind=WorkloadKind.DEV,
    impl='workloads.mnist.workload:MnistWorkload',
    dataset='MNIST (standard IDX files)',
    target_metric_name='accuracy',
    higher_is_better=True,
    validation_target_value=0.97,
    test_target_value=0.97,
    loss_type='SOFTMAX_CROSS_ENTROPY',
    max_allowed_runtime_sec=60,
    eval_period_time_sec=10,
    step_hint=7813,  # 10 epochs at batch size 64 (upstream's note).
    eval_batch_size=10_000,
    num_train_examples=50_000,
    num_eval_train_examples=10_000,  # validation count rounded up to the eval batch size.
    num_validation_examples=10_000,
    num_test_examples=10_000,
    compile_model=True,  # Upstream compiles mnist under --torch_compile.
    train_mean=0.1307,
    train_stddev=0.3081,
    notes='Upstream algoperf/workloads/mnist (v0.6).',
)

SPECS = {MNIST.name: MNIST}
