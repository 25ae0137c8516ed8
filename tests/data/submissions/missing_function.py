"""Has no update_params and no data_selection."""


def get_batch_size(workload_name):
    return 64


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return {}
