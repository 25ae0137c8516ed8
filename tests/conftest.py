"""Shared pytest setup: GPU tests skip without CUDA; tests/ is importable (tolerances).

Slow tests: most carry `@pytest.mark.slow` in their file. The cases below are marked here
because they are single parametrizations (one workload of a generic test) or fixtures' users
whose cost sits in setup; seconds are as measured in a `pytest -m 'not slow' --durations` run on
the 2-core CI machine, quiet (2026-12-02). Together ~210 s: without them `pytest -m 'not slow'`
is the < 3 min loop (#16).
"""

import pytest
import torch

SLOW_BY_ID = {
    'tests/harness/test_profile.py::test_synthetic_source_batches_fit_the_model[finewebedu_lm]': 24.4,
    'tests/harness/test_profile.py::test_synthetic_source_batches_fit_the_model[librispeech_conformer]': 7.4,
    'tests/harness/test_profile.py::test_synthetic_source_batches_fit_the_model[wmt]': 5.8,
    'tests/harness/test_profile.py::test_synthetic_source_batches_fit_the_model[librispeech_deepspeech]': 4.9,
    'tests/harness/test_profile.py::test_synthetic_source_batches_fit_the_model[fastmri]': 4.5,
    'tests/harness/test_profile.py::test_synthetic_source_batches_fit_the_model[criteo1tb]': 4.4,
    'tests/harness/test_reliability_signals.py::test_signal_stops_after_the_step_and_resume_matches_uninterrupted'
    '[SIGTERM-143]': 17.6,
    'tests/harness/test_distributed.py::test_two_rank_gloo_ddp_matches_single_process': 16.5,
    'tests/harness/test_distributed.py::test_two_rank_gloo_shampoo_with_distributed_roots_matches_single_process': 15.8,
    'tests/workloads/test_librispeech_reader.py::test_baseline_trains_on_the_converted_fixture_through_the_runner'
    '[librispeech_deepspeech]': 8.7,
    'tests/workloads/test_librispeech_reader.py::test_baseline_trains_on_the_converted_fixture_through_the_runner'
    '[librispeech_conformer]': 7.6,
    'tests/harness/test_reliability_batch_size.py::test_huge_batch_over_tiny_dataset_terminates': 6.7,
    'tests/harness/test_bench.py::test_runs_a_suite_and_writes_json_and_section': 6.4,
    'tests/submissions/test_shampoo.py::test_two_rank_gloo_roots_split_and_match_single_process': 6.0,
    'tests/workloads/test_fastmri_workload.py::test_nadamw_baseline_lowers_the_loss_on_synthetic_batches': 5.8,
    'tests/workloads/test_fastmri_runner.py::test_baseline_trains_on_the_h5_fixture_through_the_runner': 5.6,
    'tests/scoring/test_cli_and_runner_logs.py::test_scores_logs_written_by_our_runner': 5.4,
    'tests/test_gpu_check_dry_run.py::test_dry_run_writes_json_and_markdown_for_every_suite': 5.3,
    'tests/harness/test_upstream_alias.py::test_fresh_interpreter_loads_an_old_style_submission_via_the_runner': 5.1,
    'tests/workloads/test_imagenet_runner.py::test_baseline_trains_on_the_jpeg_fixture_through_the_runner'
    '[imagenet_vit]': 5.0,
    'tests/kernels/test_chunked_embedding.py::test_torch_compile_sees_one_op_with_a_fake_implementation': 5.0,
    'tests/workloads/test_wmt_reader.py::test_baseline_trains_on_the_converted_fixture_through_the_runner': 4.2,
    'tests/workloads/test_ogbg_runner.py::test_baseline_trains_on_the_converted_fixture_through_the_runner': 3.7,
    'tests/harness/test_mnist.py::test_mnist_trains_from_idx_files': 4.4,
    'tests/harness/test_tracking.py::test_wandb_offline_run_has_scalars_flags_and_group': 2.9,
    'tests/workloads/test_imagenet_runner.py::test_eval_reads_the_split_in_order_with_padding_masked[dali]': 2.6,
    'tests/workloads/test_imagenet_runner.py::test_eval_reads_the_split_in_order_with_padding_masked[pil]': 2.4,
    'tests/workloads/test_imagenet_runner.py::test_baseline_trains_on_the_jpeg_fixture_through_the_runner'
    '[imagenet_resnet]': 2.4,
    'tests/kernels/test_triton_embedding.py::test_backward_is_bitwise_deterministic_across_runs_and_piece_sizes': 2.2,
    'tests/workloads/test_cifar.py::test_baseline_trains_and_evaluates_on_the_fixture_through_the_runner': 2.1,
}


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        if item.nodeid in SLOW_BY_ID:
            item.add_marker(slow)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'gpu' in item.keywords or 'multigpu' in item.keywords:
            item.add_marker(skip_gpu)
