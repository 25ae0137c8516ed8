"""Baseline that declares training complete after its 5th update (global_step 4)."""

from algoperf import spec
from submissions.baselines.nadamw import submission as _baseline
from submissions.baselines.nadamw.submission import (  # noqa: F401 (re-exported submission functions)
    data_selection,
    get_batch_size,
    init_optimizer_state,
)


def update_params(
    workload,
    current_param_container,
    current_params_types,
    model_state,
    hyperparameters,
    batch,
    loss_type,
    optimizer_state,
    eval_results,
    global_step,
    rng,
):
    out = _baseline.update_params(
        workload,
        current_param_container,
        current_params_types,
        model_state,
        hyperparameters,
        batch,
        loss_type,
        optimizer_state,
        eval_results,
        global_step,
        rng,
    )
    if global_step == 4:
        raise spec.TrainingCompleteError
    return out
