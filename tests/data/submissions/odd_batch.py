"""Baseline with a batch size (63) that 2 ranks cannot split."""

from submissions.baselines.nadamw.submission import (  # noqa: F401 (re-exported submission functions)
    data_selection,
    init_optimizer_state,
    update_params,
)


def get_batch_size(workload_name):
    return 63
