"""Baseline with a batch size (63) that 2 ranks cannot split."""

from submissions.baselines.nadamw.submission import (
    data_selection,
    init_optimizer_state,
    update_params,
)  # noqa: F401


def get_batch_size(workload_name):
    return 63
