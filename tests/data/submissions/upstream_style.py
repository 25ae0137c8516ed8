"""A submission written exactly the way upstream PyTorch submissions are.

Module-level pytorch_setup(), absl logging, torch.optim.AdamW, float metrics
via .item() and `train_state` in the signature, like mlcommons submissions.
"""

from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed.nn as dist_nn
from absl import logging

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup

USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    del model_state, rng
    logging.info('init_optimizer_state on rank %d', RANK)
    return {
        'optimizer': torch.optim.AdamW(
            model_params.parameters(),
            lr=hyperparameters.learning_rate,
            weight_decay=hyperparameters.weight_decay,
        )
    }


def update_params(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    batch: Dict[str, spec.Tensor],
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: List[Tuple[int, float]],
    global_step: int,
    rng: spec.RandomState,
    train_state: Optional[Dict[str, Any]] = None,
) -> spec.UpdateReturn:
    assert train_state is not None and 'accumulated_submission_time' in train_state
    assert isinstance(current_params_types, dict)
    assert all(isinstance(t, spec.ParameterType) for t in current_params_types.values())
    current_param_container.train()
    optimizer_state['optimizer'].zero_grad()
    logits, new_model_state = workload.model_fn(
        params=current_param_container,
        augmented_and_preprocessed_input_batch=batch,
        model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN,
        rng=rng,
        update_batch_norm=True,
        dropout_rate=0.0,
    )
    loss_dict = workload.loss_fn(
        label_batch=batch['targets'], logits_batch=logits, mask_batch=batch.get('weights')
    )
    summed, n = loss_dict['summed'], loss_dict['n_valid_examples']
    if USE_PYTORCH_DDP:
        summed, n = dist_nn.all_reduce(summed), dist_nn.all_reduce(n)
    loss = summed / n
    loss.backward()
    optimizer_state['optimizer'].step()
    if workload.metrics_logger is not None and global_step % 5 == 0:
        workload.metrics_logger.append_scalar_metrics({'loss': loss.item()}, global_step)
    return optimizer_state, current_param_container, new_model_state


def get_batch_size(workload_name):
    if workload_name == 'digits':
        return 32
    raise ValueError(f'Unsupported workload name: {workload_name}.')


def data_selection(
    workload: spec.Workload,
    input_queue: Iterator[Dict[str, spec.Tensor]],
    optimizer_state: spec.OptimizerState,
    current_param_container: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    global_step: int,
    rng: spec.RandomState,
) -> Dict[str, spec.Tensor]:
    return next(input_queue)
