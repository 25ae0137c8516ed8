"""AlgoPerf v0.6 baseline: NAdamW, linear warmup then cosine decay (plain PyTorch).

One file for both rulesets. External tuning: hyperparameters come from
`tuning_search_space.json` (upstream's list of 5 points, used in order).
Self-tuning: the runner passes `hyperparameters=None` and upstream's
self-tuning constants below are used.

Same algorithm and schedule as upstream's `pytorch_nadamw_full_budget.py`.
One change outside the algorithm: the train loss and gradient norm logged on
steps <= 100 and every 500th step are handed to the metrics logger as device
tensors, which the harness reads at the next eval (off the clock). Upstream
calls `.item()` inside the step, a host sync on the clock each of those steps.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.distributed.nn as dist_nn

from algoperf import spec
from kernels import multi_tensor_l2norm
from submissions.optimizers.nadamw import NAdamW
from submissions.optimizers.schedules import cosine_warmup_schedule

_HPARAMS = collections.namedtuple(
    'Hyperparameters',
    ['dropout_rate', 'label_smoothing', 'learning_rate', 'one_minus_beta1', 'beta2', 'weight_decay', 'warmup_factor'],
)
# Upstream's self-tuning constants (algorithms/baselines/self_tuning).
SELF_TUNING_HPARAMS = _HPARAMS(
    dropout_rate=0.1,
    label_smoothing=0.0,
    learning_rate=0.0017486387539278373,
    one_minus_beta1=0.06733926164,
    beta2=0.9955159689799007,
    weight_decay=0.08121616522670176,
    warmup_factor=0.02,
)

# Upstream's baseline batch sizes; 'digits' is ours.
_BATCH_SIZES = {
    'criteo1tb': 262_144,
    'fastmri': 32,
    'imagenet_resnet': 1024,
    'imagenet_resnet_silu': 512,
    'imagenet_resnet_gelu': 512,
    'imagenet_vit': 1024,
    'librispeech_conformer': 256,
    'librispeech_deepspeech': 256,
    'ogbg': 512,
    'wmt': 128,
    'finewebedu_lm': 64,  # v1.0 (upstream's baseline; algoperf_v1.md §1.8).
    'mnist': 16,
    'cifar': 16384,
    'digits': 64,
}


def _hparams(hyperparameters):
    return SELF_TUNING_HPARAMS if hyperparameters is None else hyperparameters


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    del model_state, rng
    hp = _hparams(hyperparameters)
    optimizer = NAdamW(
        model_params.parameters(),
        lr=hp.learning_rate,
        betas=(1.0 - hp.one_minus_beta1, hp.beta2),
        eps=1e-8,
        weight_decay=hp.weight_decay,
    )
    return {
        'optimizer': optimizer,
        'scheduler': cosine_warmup_schedule(optimizer, workload.step_hint, hp.warmup_factor),
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
    del current_params_types, loss_type, eval_results, train_state
    hp = _hparams(hyperparameters)
    model = current_param_container
    model.train()
    optimizer_state['optimizer'].zero_grad()
    logits, new_model_state = workload.model_fn(
        params=model,
        augmented_and_preprocessed_input_batch=batch,
        model_state=model_state,
        mode=spec.ForwardPassMode.TRAIN,
        rng=rng,
        update_batch_norm=True,
        dropout_rate=hp.dropout_rate,
    )
    loss_dict = workload.loss_fn(
        label_batch=batch['targets'],
        logits_batch=logits,
        mask_batch=batch.get('weights'),
        label_smoothing=getattr(hp, 'label_smoothing', 0.0),
    )
    summed_loss, n_valid = loss_dict['summed'], loss_dict['n_valid_examples']
    if _distributed():
        # Differentiable all-reduce: the loss is the global mean; DDP averages grads.
        summed_loss = dist_nn.all_reduce(summed_loss)
        n_valid = dist_nn.all_reduce(n_valid)
    loss = summed_loss / n_valid
    loss.backward()
    grad_clip = getattr(hp, 'grad_clip', None)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
    optimizer_state['optimizer'].step()
    optimizer_state['scheduler'].step()

    if (global_step <= 100 or global_step % 500 == 0) and workload.metrics_logger is not None:
        with torch.no_grad():
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm, _ = multi_tensor_l2norm(grads)
        # Device tensors: the logger reads them at the next eval, off the clock.
        workload.metrics_logger.append_scalar_metrics(
            {'loss': loss.detach(), 'grad_norm': grad_norm}, global_step
        )
    return optimizer_state, current_param_container, new_model_state


def prepare_for_eval(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: List[Tuple[int, float]],
    global_step: int,
    rng: spec.RandomState,
) -> spec.UpdateReturn:
    """Identity, as upstream's baseline."""
    del workload, hyperparameters, current_params_types, loss_type, eval_results, global_step, rng
    return optimizer_state, current_param_container, model_state


def get_batch_size(workload_name: str) -> int:
    """Global batch size; ValueError for other names (the runner retries the base name)."""
    if workload_name not in _BATCH_SIZES:
        raise ValueError(f'Unsupported workload name: {workload_name}.')
    return _BATCH_SIZES[workload_name]


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
    del workload, optimizer_state, current_param_container, model_state, hyperparameters, global_step, rng
    return next(input_queue)
