"""`SpecWorkload`: a `spec.Workload` whose constants come from a `WorkloadSpec`.

Upstream repeats a dozen constant `@property`s in every workload class; here a
workload sets `workload_spec` (its torch-free spec from workloads/<name>/spec.py)
and inherits them, plus the strict target checks the runner uses. It also takes
the `Runtime` (device, rank, world size) instead of module-level globals.
"""

from __future__ import annotations

from typing import Any, ClassVar

from algoperf import spec
from algoperf.workload_spec import WorkloadSpec


class SpecWorkload(spec.Workload):
    """Base for our workloads. Subclasses set `workload_spec` and implement
    `init_model_fn`, `model_fn`, `loss_fn`, `is_output_params`,
    `_build_input_queue` and `_eval_model_on_split`."""

    workload_spec: ClassVar[WorkloadSpec]

    def __init__(self, runtime=None, **kwargs: Any) -> None:
        super().__init__()
        if runtime is None:
            from algoperf.runtime import Runtime  # Lazy: imports torch.

            runtime = Runtime.from_env()
        self.runtime = runtime

    # Constants from the spec -------------------------------------------------------------
    @property
    def target_metric_name(self) -> str:
        return self.workload_spec.target_metric_name

    @property
    def validation_target_value(self) -> float:
        return self.workload_spec.validation_target_value

    @property
    def test_target_value(self) -> float:
        return self.workload_spec.test_target_value

    @property
    def loss_type(self) -> spec.LossType:
        return spec.LossType[self.workload_spec.loss_type]

    @property
    def num_train_examples(self) -> int:
        return self.workload_spec.num_train_examples

    @property
    def num_eval_train_examples(self) -> int:
        return self.workload_spec.num_eval_train_examples

    @property
    def num_validation_examples(self) -> int:
        return self.workload_spec.num_validation_examples

    @property
    def num_test_examples(self) -> int | None:
        return self.workload_spec.num_test_examples

    @property
    def eval_batch_size(self) -> int:
        return self.workload_spec.eval_batch_size

    @property
    def train_mean(self) -> Any:
        if self.workload_spec.train_mean is None:
            raise NotImplementedError
        return self.workload_spec.train_mean

    @property
    def train_stddev(self) -> Any:
        if self.workload_spec.train_stddev is None:
            raise NotImplementedError
        return self.workload_spec.train_stddev

    @property
    def max_allowed_runtime_sec(self) -> int:
        return self.workload_spec.max_allowed_runtime_sec

    @property
    def eval_period_time_sec(self) -> int:
        return self.workload_spec.eval_period_time_sec

    @property
    def step_hint(self) -> int:
        return self.workload_spec.step_hint

    # Target checks: strict, like upstream's runner ---------------------------------------------
    def _reached(self, eval_result: dict[str, float], split: str, target: float) -> bool:
        value = eval_result.get(f'{split}/{self.target_metric_name}')
        return value is not None and self.workload_spec.reached(float(value), target, strict=True)

    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        return self._reached(eval_result, 'validation', self.validation_target_value)

    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        if self.test_target_value is None:
            return True  # No test target (upstream's finewebedu_lm returns True).
        return self._reached(eval_result, 'test', self.test_target_value)

    # Further primitive properties (e.g. criteo's vocab_size) from `spec.extra`, so they
    # read like upstream's properties and land in meta_data_<n>.json.
    def __getattr__(self, name: str) -> Any:
        if name != 'workload_spec':
            extra = self.workload_spec.extra
            if name in extra:
                return extra[name]
        raise AttributeError(f'{type(self).__name__} has no attribute {name!r}')

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.workload_spec.extra))

    # Ours --------------------------------------------------------------------------------------
    def _build_synthetic_input_queue(
        self, data_rng: spec.RandomState, split: str, global_batch_size: int
    ):
        """Endless batches with this workload's exact keys, shapes and dtypes, made on the device.

        The contract every workload implements so that `algoperf profile --data synthetic`
        runs without the dataset: same dict as `_build_input_queue` (per-device slice under
        DDP), random values, no host work or copies per batch after the first.
        """
        raise NotImplementedError(f'{self.workload_spec.name} has no synthetic data source yet.')

    def _build_model(self):
        """The model on the current default device; workloads that use the default
        `init_model_fn` implement this."""
        raise NotImplementedError(f'{self.workload_spec.name} builds its model in init_model_fn.')

    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        """Build on the CPU with upstream's seeding (same initial weights), then place it.

        Args:
          rng: the model-init RandomState; its first word seeds torch's global RNG.

        Returns:
          (model, None); the model is DDP-wrapped when distributed.
        """
        import torch

        torch.random.manual_seed(int(rng[0]))
        return self._place_model(self._build_model()), None

    def _to_device(self, tensor):
        """A host tensor on the runtime's device; pinned first on CUDA so the copy is async."""
        if tensor is None:
            return None
        device = self.runtime.device
        pin = device.type == 'cuda'
        return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=pin)

    def _place_model(self, model):
        """The common tail of init_model_fn: records param shapes/types, moves the model to
        the runtime's device and wraps it in DDP when distributed. Returns the model to use."""
        from torch.nn.parallel import DistributedDataParallel

        from algoperf import param_utils

        self._param_shapes = param_utils.pytorch_param_shapes(model)
        self._param_types = param_utils.pytorch_param_types(self._param_shapes)
        model.to(self.runtime.device)
        if self.runtime.distributed:
            device_ids = [self.runtime.local_rank] if self.runtime.device.type == 'cuda' else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return model

    @staticmethod
    def _forward_context(model, mode: spec.ForwardPassMode):
        """Sets train/eval mode for `mode`; returns no_grad() for EVAL, a null context otherwise."""
        import contextlib

        import torch

        if mode == spec.ForwardPassMode.TRAIN:
            model.train()
        elif mode == spec.ForwardPassMode.EVAL:
            model.eval()
        return torch.no_grad() if mode == spec.ForwardPassMode.EVAL else contextlib.nullcontext()

    def validate_data_dir(self, data_dir: str) -> None:
        """Raise FileNotFoundError naming what is missing (before any log is written)."""


class EvalPass:
    """An eval split's batches for one pass, cycled (evals reuse them), with the pass length.

    `_eval_model_on_split` of the readers that pack or pad batches runs `batches_per_pass`
    batches instead of upstream's ceil(num_examples / batch size).
    """

    def __init__(self, batches: list) -> None:
        import itertools

        self.batches_per_pass = len(batches)
        self._cycle = itertools.cycle(batches)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._cycle)
