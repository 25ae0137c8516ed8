"""The AlgoPerf API: types, enums, the `Workload` base and submission signatures.

Names, enum values and signatures are exactly upstream's (`algoperf/spec.py`,
v0.6), so submissions written for upstream (`from algoperf import spec`) run
unchanged. Unlike upstream this module imports neither torch nor jax at import
time: scoring and the registry use it on machines without torch.
"""

from __future__ import annotations

import abc
import enum
import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from algoperf.workload_spec import WorkloadKind, WorkloadSpec

if TYPE_CHECKING:  # For the ParameterContainer annotation only; never imported at run time.
    import torch

__all__ = [
    'LossType',
    'ForwardPassMode',
    'ParameterType',
    'ShapeTuple',
    'Workload',
    'TrainingCompleteError',
    'WorkloadSpec',
    'WorkloadKind',
]

_log = logging.getLogger(__name__)


class LossType(enum.Enum):
    SOFTMAX_CROSS_ENTROPY = 0
    SIGMOID_CROSS_ENTROPY = 1
    MEAN_SQUARED_ERROR = 2
    CTC_LOSS = 3
    MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
    TRAIN = 0
    EVAL = 1


class ParameterType(enum.Enum):
    WEIGHT = 0
    BIAS = 1
    CONV_WEIGHT = 2
    BATCH_NORM_SCALE = 3
    BATCH_NORM_BIAS = 4
    LAYER_NORM_SCALE = 5
    LAYER_NORM_BIAS = 6
    EMBEDDING = 7
    ATTENTION_Q = 8
    ATTENTION_K = 9
    ATTENTION_V = 10
    ATTENTION_OUT = 11
    ATTENTION_QKV = 12  # Implementations that fuse Q, K and V.
    ATTENTION_KV = 13  # Implementations that fuse K and V.
    ATTENTION_BIAS = 14  # Split out so fused models count biases alike.


Tensor = Any


class ShapeTuple:
    """A shape that pytree utilities treat as a leaf, not as a tuple to descend."""

    def __init__(self, shape_tuple):
        self.shape_tuple = shape_tuple

    def __repr__(self):
        return f'ShapeTuple({self.shape_tuple})'

    def __eq__(self, other):
        return self.shape_tuple == other.shape_tuple

    def __hash__(self):
        return hash(tuple(self.shape_tuple))


Shape = Union[
    Tuple[int],
    Tuple[int, int],
    Tuple[int, int, int],
    Tuple[int, int, int, int],
    ShapeTuple,
]
ParameterShapeTree = Dict[str, Dict[str, Shape]]
ParameterKey = str
# For PyTorch the container is the nn.Module (a string here keeps torch unimported).
ParameterContainer = Union[Dict[ParameterKey, Dict[ParameterKey, Tensor]], 'torch.nn.Module']
ParameterTypeTree = Dict[ParameterKey, Dict[ParameterKey, ParameterType]]
RandomState = Any  # For PyTorch: a numpy array of two uint32 (see random_utils).
OptimizerState = Union[Dict[str, Any], Tuple[Any, Any]]
Hyperparameters = Any
Timing = int
Steps = int
ModelAuxiliaryState = Any  # BN statistics in JAX; always None for PyTorch.
ModelInitState = Tuple[ParameterContainer, ModelAuxiliaryState]


class TrainingCompleteError(Exception):
    """Raised by `update_params` to end training; a final eval follows."""


class Workload(metaclass=abc.ABCMeta):
    """Upstream's abstract workload. Abstract members are exactly upstream's."""

    def __init__(self, *args, **kwargs) -> None:
        del args
        del kwargs
        self._param_shapes: Optional[ParameterShapeTree] = None
        self._param_types: Optional[ParameterTypeTree] = None
        self._eval_iters: Dict[str, Iterator] = {}
        self.metrics_logger = None

    @property
    @abc.abstractmethod
    def target_metric_name(self) -> str:
        """The name of the target metric (useful for scoring/processing code)."""

    @abc.abstractmethod
    def has_reached_validation_target(self, eval_result: Dict[str, float]) -> bool:
        """Whether the validation goal has been reached (strict comparison)."""

    @abc.abstractmethod
    def has_reached_test_target(self, eval_result: Dict[str, float]) -> bool:
        """Whether the test goal has been reached (strict comparison)."""

    @abc.abstractmethod
    def _build_input_queue(
        self,
        data_rng: RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: Optional[bool] = None,
        repeat_final_dataset: Optional[bool] = None,
        num_batches: Optional[int] = None,
    ) -> Iterator[Dict[str, Any]]:
        """Build the input queue; the one function submitters must NOT call.

        Splits are 'train', 'eval_train', 'validation' and 'test'. Batches are
        dicts with plural keys: 'inputs', 'targets', optionally 'weights'.
        """

    def attach_metrics_logger(self, metrics_logger) -> None:
        """Attaches a metric logger to the workload."""
        self.metrics_logger = metrics_logger

    @property
    @abc.abstractmethod
    def validation_target_value(self) -> float:
        """The validation target value to reach."""

    @property
    @abc.abstractmethod
    def test_target_value(self) -> float:
        """The test target value to reach."""

    @property
    @abc.abstractmethod
    def loss_type(self) -> LossType:
        """The type of loss function."""

    @property
    @abc.abstractmethod
    def num_train_examples(self) -> int:
        """The size of the training set."""

    @property
    @abc.abstractmethod
    def eval_batch_size(self) -> int:
        """The batch size for evaluation."""

    @property
    @abc.abstractmethod
    def num_eval_train_examples(self) -> int:
        """The number of training examples to evaluate metrics on."""

    @property
    @abc.abstractmethod
    def num_validation_examples(self) -> int:
        """The size of the validation set."""

    @property
    @abc.abstractmethod
    def num_test_examples(self) -> int:
        """The size of the test set (None: no test split)."""

    @property
    @abc.abstractmethod
    def train_mean(self) -> Any:
        """The mean of the training data."""

    @property
    @abc.abstractmethod
    def train_stddev(self) -> Any:
        """The stddev of the training data."""

    @property
    @abc.abstractmethod
    def max_allowed_runtime_sec(self) -> int:
        """The max allowed runtime of the workload in seconds."""

    @property
    @abc.abstractmethod
    def eval_period_time_sec(self) -> int:
        """The eval period of the workload in seconds."""

    @property
    @abc.abstractmethod
    def step_hint(self) -> int:
        """Approx. steps the baseline can do in the allowed runtime budget."""

    @property
    def param_shapes(self):
        """The shapes of the parameters in the workload model."""
        if self._param_shapes is None:
            raise ValueError(
                'This should not happen, workload.init_model_fn() should be called '
                'before workload.param_shapes!'
            )
        return self._param_shapes

    @property
    def model_params_types(self):
        """The types of the parameters in the workload model."""
        if self._param_types is None:
            raise ValueError(
                'This should not happen, workload.init_model_fn() should be called '
                'before workload.param_types!'
            )
        return self._param_types

    @abc.abstractmethod
    def is_output_params(self, param_key: ParameterKey) -> bool:
        """Whether a key in ParameterContainer is the output layer parameters."""

    @abc.abstractmethod
    def init_model_fn(self, rng: RandomState) -> ModelInitState:
        """Return (initial_params, initial_model_state)."""

    @abc.abstractmethod
    def model_fn(
        self,
        params: ParameterContainer,
        augmented_and_preprocessed_input_batch: Dict[str, Tensor],
        model_state: ModelAuxiliaryState,
        mode: ForwardPassMode,
        rng: RandomState,
        update_batch_norm: bool,
        dropout_rate: float,
    ) -> Tuple[Tensor, ModelAuxiliaryState]:
        """Return (logits_batch, new_model_state)."""

    def output_activation_fn(self, logits_batch: Tensor, framework: str) -> Tensor:
        """Turn logits into probabilities, according to the loss_type property."""
        if framework not in ['pytorch', 'jax']:
            raise ValueError(f'`framework` has to be either `pytorch` or `jax`, got {framework}.')
        if framework == 'jax':
            raise ValueError('This implementation is PyTorch-only; use framework="pytorch".')
        import torch.nn.functional as F  # Lazy: keep this module torch-free.

        if self.loss_type in (LossType.MEAN_SQUARED_ERROR, LossType.MEAN_ABSOLUTE_ERROR):
            return logits_batch
        if self.loss_type == LossType.SIGMOID_CROSS_ENTROPY:
            return F.sigmoid(logits_batch)
        return F.softmax(logits_batch, dim=-1)  # Softmax CE and CTC.

    @abc.abstractmethod
    def loss_fn(
        self,
        label_batch: Union[Tuple[Tensor, Tensor], Tensor],
        logits_batch: Union[Tuple[Tensor, Tensor], Tensor],
        mask_batch: Optional[Tensor] = None,
        label_smoothing: float = 0.0,
    ) -> Dict[str, Tensor]:
        """Masked loss without regularisation, not synced across devices.

        Returns {'summed': scalar, 'n_valid_examples': scalar, 'per_example': 1-d}.
        """

    @abc.abstractmethod
    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> Dict[str, float]:
        """Evaluate the model on a given dataset split, return final scalars."""

    def eval_model(
        self,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        imagenet_v2_data_dir: Optional[str],
        global_step: int,
    ) -> Dict[str, float]:
        """Run a full evaluation: eval_train, validation and (if any) test."""
        split_kwargs = dict(
            global_batch_size=global_batch_size,
            params=params,
            model_state=model_state,
            rng=rng,
            global_step=global_step,
        )
        _log.debug('Evaluating on the training split.')
        train_metrics = self._eval_model_on_split(
            split='eval_train',
            num_examples=self.num_eval_train_examples,
            data_dir=data_dir,
            **split_kwargs,
        )
        eval_metrics = {'train/' + k: v for k, v in train_metrics.items()}
        _log.debug('Evaluating on the validation split.')
        validation_metrics = self._eval_model_on_split(
            'validation',
            num_examples=self.num_validation_examples,
            data_dir=data_dir,
            **split_kwargs,
        )
        for k, v in validation_metrics.items():
            eval_metrics['validation/' + k] = v
        eval_metrics['validation/num_examples'] = self.num_validation_examples
        try:
            if self.num_test_examples is not None:
                _log.debug('Evaluating on the test split.')
                test_metrics = self._eval_model_on_split(
                    'test',
                    num_examples=self.num_test_examples,
                    data_dir=imagenet_v2_data_dir if imagenet_v2_data_dir else data_dir,
                    **split_kwargs,
                )
                for k, v in test_metrics.items():
                    eval_metrics['test/' + k] = v
                eval_metrics['test/num_examples'] = self.num_test_examples
        except NotImplementedError:
            pass
        return eval_metrics


# Submission functions, filled in by the submitter. Signatures are upstream's.

InitOptimizerFn = Callable[
    [Workload, ParameterContainer, ModelAuxiliaryState, Hyperparameters, RandomState],
    OptimizerState,
]


def init_optimizer_state(
    workload: Workload,
    model_params: ParameterContainer,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    rng: RandomState,
) -> OptimizerState:
    """Return the initial optimizer state."""


UpdateReturn = Tuple[OptimizerState, ParameterContainer, ModelAuxiliaryState]
UpdateParamsFn = Callable[
    [
        Workload,
        ParameterContainer,
        ParameterTypeTree,
        ModelAuxiliaryState,
        Hyperparameters,
        Dict[str, Tensor],
        LossType,
        OptimizerState,
        List[Tuple[int, float]],
        int,
        RandomState,
        Optional[Dict[str, Any]],
    ],
    UpdateReturn,
]


def update_params(
    workload: Workload,
    current_param_container: ParameterContainer,
    current_params_types: ParameterTypeTree,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    batch: Dict[str, Tensor],
    loss_type: LossType,
    optimizer_state: OptimizerState,
    eval_results: List[Tuple[int, float]],
    global_step: int,
    rng: RandomState,
    train_state: Optional[Dict[str, Any]] = None,
) -> UpdateReturn:
    """One step. May raise TrainingCompleteError to end the run."""


PrepareForEvalFn = Callable[
    [
        Workload,
        ParameterContainer,
        ParameterTypeTree,
        ModelAuxiliaryState,
        Hyperparameters,
        LossType,
        OptimizerState,
        List[Tuple[int, float]],
        int,
        RandomState,
    ],
    UpdateReturn,
]


def prepare_for_eval(
    workload: Workload,
    current_param_container: ParameterContainer,
    current_params_types: ParameterTypeTree,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    loss_type: LossType,
    optimizer_state: OptimizerState,
    eval_results: List[Tuple[int, float]],
    global_step: int,
    rng: RandomState,
) -> UpdateReturn:
    """Prepare model and optimizer for evaluation (on the clock)."""


DataSelectionFn = Callable[
    [
        Workload,
        Iterator[Dict[str, Any]],
        OptimizerState,
        ParameterContainer,
        LossType,
        Hyperparameters,
        int,
        RandomState,
    ],
    Tuple[Tensor, Tensor],
]


def data_selection(
    workload: Workload,
    input_queue: Iterator[Dict[str, Any]],
    optimizer_state: OptimizerState,
    current_param_container: ParameterContainer,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    global_step: int,
    rng: RandomState,
) -> Dict[str, Tensor]:
    """Select data from the infinitely repeating, pre-shuffled input queue."""


def get_batch_size(workload_name: str) -> int:
    """Return the global batch size to use for a given workload."""
