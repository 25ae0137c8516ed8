"""A submission written against upstream's pre-v0.6 package name, `algorithmic_efficiency`.

Every v0.5 leaderboard PyTorch submission imports these modules by the old name; this one uses
each of them, then runs an SGD step with the old-style module-level `pytorch_setup()`.
"""

from typing import Dict, Iterator, List, Tuple

import torch
import torch.distributed.nn as dist_nn

import algorithmic_efficiency.random_utils as prng
from algorithmic_efficiency import logger_utils, param_utils, spec
from algorithmic_efficiency.pytorch_utils import pytorch_setup
from algorithmic_efficiency.workloads.workloads import get_base_workload_name

USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()
assert callable(logger_utils.write_json) and callable(param_utils.pytorch_param_types)


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    del model_state, hyperparameters
    _, _ = prng.split(rng, 2)  # Old-style submissions split keys like this.
    return {'optimizer': torch.optim.SGD(model_params.parameters(), lr=0.1, momentum=0.9)}


def update_params(
    workload: spec.Workload, current_param_container, current_params_types, model_state,
    hyperparameters, batch: Dict[str, spec.Tensor], loss_type, optimizer_state,
    eval_results: List[Tuple[int, float]], global_step: int, rng,
) -> spec.UpdateReturn:
    current_param_container.train()
    optimizer_state['optimizer'].zero_grad()
    logits, new_model_state = workload.model_fn(
        current_param_container, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True
    )
    loss_dict = workload.loss_fn(batch['targets'], logits, batch.get('weights'))
    summed, n = loss_dict['summed'], loss_dict['n_valid_examples']
    if USE_PYTORCH_DDP:
        summed, n = dist_nn.all_reduce(summed), dist_nn.all_reduce(n)
    (summed / n).backward()
    optimizer_state['optimizer'].step()
    return optimizer_state, current_param_container, new_model_state


def get_batch_size(workload_name):
    # Upstream tables know upstream names only (mnist, not our embedded digits).
    table = {'mnist': 32, 'wmt': 128}
    return table[get_base_workload_name(workload_name)] if workload_name != 'digits' else 32


def data_selection(workload, input_queue: Iterator[Dict[str, spec.Tensor]], optimizer_state,
                   current_param_container, model_state, hyperparameters, global_step, rng):
    return next(input_queue)
