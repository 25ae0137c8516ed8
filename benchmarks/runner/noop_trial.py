"""A trivial workload and a no-op submission, to time and audit the runner itself.

With nothing to compute, a ``train_once`` step costs exactly what the runner adds around
``data_selection`` and ``update_params``: per-step RNG derivation, the clock's time point,
bookkeeping and progress. Used by ``bench_runner_overhead.py`` and by
``tests/harness/test_runner_syncs.py`` (which imports ``benchmarks.runner.noop_trial``).

Scope: CPU or CUDA (the model and the constant batch live on the runtime's device); no
evals (runs use ``skip_evals=True``), no data, no files.
"""

import sys

import torch

from algoperf import param_utils, spec
from algoperf.config import RunConfig
from algoperf.profiler import PassThroughProfiler
from algoperf.progress import Progress
from algoperf.runner import TrialSetup
from algoperf.runtime import Runtime
from algoperf.submission import Submission
from algoperf.timing import Clock

BATCH_SIZE = 8
FEATURES = 4


class NoOpWorkload(spec.Workload):
    """The smallest complete ``spec.Workload``: a 4->2 linear model and one constant batch.

    Budget and eval period are effectively infinite, so a run ends only at
    ``max_global_steps`` and its only eval points are the mandatory ones after step 1 and
    at the end (no-ops under ``skip_evals``).
    """

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    target_metric_name = 'accuracy'
    validation_target_value = 1.0
    test_target_value = 1.0
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY
    num_train_examples = BATCH_SIZE
    eval_batch_size = BATCH_SIZE
    num_eval_train_examples = BATCH_SIZE
    num_validation_examples = BATCH_SIZE
    num_test_examples = BATCH_SIZE
    train_mean = 0.0
    train_stddev = 1.0
    max_allowed_runtime_sec = 10**9
    eval_period_time_sec = 10**9
    step_hint = 1

    def has_reached_validation_target(self, eval_result):
        return False

    def has_reached_test_target(self, eval_result):
        return False

    def _build_input_queue(
        self,
        data_rng,
        split,
        data_dir,
        global_batch_size,
        cache=None,
        repeat_final_dataset=None,
        num_batches=None,
    ):
        device = self.runtime.device
        batch = {
            'inputs': torch.zeros(global_batch_size, FEATURES, device=device),
            'targets': torch.zeros(global_batch_size, dtype=torch.long, device=device),
        }
        while True:
            yield batch

    def is_output_params(self, param_key):
        return True

    def init_model_fn(self, rng):
        model = torch.nn.Linear(FEATURES, 2).to(self.runtime.device)
        self._param_shapes = param_utils.pytorch_param_shapes(model)
        self._param_types = param_utils.pytorch_param_types(self._param_shapes)
        return model, None

    def model_fn(
        self,
        params,
        augmented_and_preprocessed_input_batch,
        model_state,
        mode,
        rng,
        update_batch_norm,
        dropout_rate,
    ):
        return params(augmented_and_preprocessed_input_batch['inputs']), model_state

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
        per_example = torch.nn.functional.cross_entropy(logits_batch, label_batch, reduction='none')
        return {
            'summed': per_example.sum(),
            'n_valid_examples': per_example.numel(),
            'per_example': per_example,
        }

    def _eval_model_on_split(
        self,
        split,
        num_examples,
        global_batch_size,
        params,
        model_state,
        rng,
        data_dir,
        global_step=0,
    ):
        return {'accuracy': 0.0, 'loss': 0.0}


# The no-op submission (module-level functions, as a submission file defines them).
def get_batch_size(workload_name):
    return BATCH_SIZE


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return None


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
    return optimizer_state, current_param_container, model_state


def data_selection(
    workload,
    input_queue,
    optimizer_state,
    current_param_container,
    model_state,
    hyperparameters,
    global_step,
    rng,
):
    return next(input_queue)


def submission() -> Submission:
    """This module's functions as a loaded ``Submission`` (no file import needed)."""
    return Submission(
        path=__file__,
        module=sys.modules[__name__],
        get_batch_size=get_batch_size,
        init_optimizer_state=init_optimizer_state,
        update_params=update_params,
        data_selection=data_selection,
    )


def trial_setup(steps: int, runtime: Runtime, clock: Clock | None = None) -> TrialSetup:
    """A ``TrialSetup`` that runs ``steps`` steps with no evals, logs, checkpoints or progress.

    Args:
        steps: ``max_global_steps``.
        runtime: where the trial runs.
        clock: the clock (default ``Clock(runtime)``); tests pass a counting subclass.
    """
    config = RunConfig(
        submission_path=__file__,
        workload='noop',
        experiment_dir='unused',
        tuning_ruleset='self',
        max_global_steps=steps,
        skip_evals=True,
        save_checkpoints=False,
        progress=False,
        torch_compile=False,
    )
    return TrialSetup(
        config=config,
        runtime=runtime,
        clock=clock or Clock(runtime),
        global_batch_size=BATCH_SIZE,
        global_eval_batch_size=BATCH_SIZE,
        trial_dir=None,
        profiler=PassThroughProfiler(),
        progress=Progress(enabled=False),
    )
