"""`digits`: our offline dev workload (see workload.py for data and model), torch-free."""

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

SPLIT_SEED = 0

DIGITS = WorkloadSpec(
    name='digits',
    base_workload='digits',
    kind=WorkloadKind.DEV,
    # Same task shape as upstream's MNIST (10-class images, small MLP): upstream
    # submissions' get_batch_size tables know 'mnist' and not 'digits'.
    stands_in_for='mnist',
    impl='workloads.digits.workload:DigitsWorkload',
    dataset='UCI handwritten digits, as bundled with scikit-learn (1,797 8x8 images)',
    target_metric_name='accuracy',
    higher_is_better=True,
    # Targets from scripts/calibrate_digits.py (20 seeds of the self-tuning NAdamW baseline,
    # 2,000 steps, eval every 10 steps): best validation accuracy min 0.983, median 0.990;
    # all 20 seeds pass 0.975 (first at step 140..410, median 245), with test accuracy
    # >= 0.973 at that eval. Upstream's rule (median best of the tuned baseline) would give
    # 0.990, a target half the seeds miss; this workload exists for quick starts and harness
    # tests, so its targets are ones the baseline meets on every seed measured.
    validation_target_value=0.975,
    test_target_value=0.97,
    loss_type='SOFTMAX_CROSS_ENTROPY',
    max_allowed_runtime_sec=20,
    eval_period_time_sec=1,
    # Where the baseline's cosine schedule ends: ~3.5 s of training at ~1.7 ms/step on
    # 2 CPU cores; the 20 s budget leaves room for slower or busier machines.
    step_hint=2000,
    eval_batch_size=300,
    num_train_examples=1197,
    num_eval_train_examples=300,
    num_validation_examples=300,
    num_test_examples=300,
    # Mean and std of the train split's pixels scaled to [0, 1] (computed once, fixed).
    train_mean=0.30577909617794485,
    train_stddev=0.3756214373143802,
    notes='Ours: targets measured with scripts/calibrate_digits.py (see comments).',
)

SPECS = {DIGITS.name: DIGITS}
