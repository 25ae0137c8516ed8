"""The NAdamW baseline with a global batch of 2, for runner tests on image-sized fixtures on CPU."""

from submissions.baselines.nadamw.submission import (  # noqa: F401
    data_selection,
    init_optimizer_state,
    prepare_for_eval,
    update_params,
)


def get_batch_size(workload_name: str) -> int:
    del workload_name
    return 2
