"""`SpecWorkload`: a `spec.Workload` whose constants come from a `WorkloadSpec`.

Upstream repeats a dozen constant `@property`s in every workload class; here a
workload sets `workload_spec` (its torch-free spec from workloads/<name>/spec.py)
and inherits them, plus the strict target checks the runner uses. It also takes
the `Runtime` (device, rank, world size) instead of module-level globals.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from algoperf import spec
from algoperf.workload_spec import WorkloadSpec

_log = logging.getLogger(__name__)

# Memory-bounded evaluation (see `SpecWorkload.eval_examples_per_forward`).
EVAL_MAX_EXAMPLES_ENV = 'ALGOPERF_EVAL_MAX_EXAMPLES'  # Examples per eval forward, per device.
EVAL_MEMORY_ENV = 'ALGOPERF_EVAL_MEMORY_MB'  # Activation budget of one eval forward.
# Default budgets. CPU: 4 GiB keeps an eval beside the cached eval splits and the model
# state on a 24 GB machine (fastMRI caches ~2.9 GB of slices per split, as upstream).
# CUDA: a quarter of the device (an H200's 35 GB; upstream's 16 GB V100s ran 1/8 of
# each eval batch per device, e.g. ogbg's 4,096 graphs in ~2.4 GB).
_CPU_EVAL_MEMORY_BYTES = 4 << 30
_CUDA_EVAL_MEMORY_FRACTION = 0.25


class SpecWorkload(spec.Workload):
    """Base for our workloads. Subclasses set `workload_spec` and implement
    `init_model_fn`, `model_fn`, `loss_fn`, `is_output_params`,
    `_build_input_queue` and `_eval_model_on_split`."""

    workload_spec: ClassVar[WorkloadSpec]
    # Peak bytes one eval example adds to an eval forward (activations under no_grad,
    # measured or estimated per workload; see each workload's comment). None: evals
    # are small enough to run their whole batch at once.
    eval_bytes_per_example: ClassVar[int | None] = None
    # Examples per eval forward, per device, overriding the derived cap (tests); the
    # environment variable ALGOPERF_EVAL_MAX_EXAMPLES overrides both.
    eval_max_examples_per_forward: int | None = None

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

    # Evaluation: memory-bounded forwards, the pass actually present, true counts ----------------
    def eval_examples_per_forward(self) -> int | None:
        """Most examples (per device) one eval forward may take; None: no cap.

        From, in order: the environment variable ALGOPERF_EVAL_MAX_EXAMPLES, the
        attribute `eval_max_examples_per_forward`, or the eval memory budget
        (ALGOPERF_EVAL_MEMORY_MB, default 4 GiB on CPU and a quarter of a CUDA device)
        divided by the workload's `eval_bytes_per_example`.
        """
        env = os.environ.get(EVAL_MAX_EXAMPLES_ENV)
        if env:
            return _positive_int(env, EVAL_MAX_EXAMPLES_ENV)
        if self.eval_max_examples_per_forward is not None:
            return _positive_int(self.eval_max_examples_per_forward, 'eval_max_examples_per_forward')
        if self.eval_bytes_per_example is None:
            return None
        return max(1, self._eval_memory_bytes() // self.eval_bytes_per_example)

    def _eval_memory_bytes(self) -> int:
        env = os.environ.get(EVAL_MEMORY_ENV)
        if env:
            return _positive_int(env, EVAL_MEMORY_ENV) << 20
        device = self.runtime.device
        if device.type == 'cuda':
            import torch

            total = torch.cuda.get_device_properties(device).total_memory
            return int(total * _CUDA_EVAL_MEMORY_FRACTION)
        return _CPU_EVAL_MEMORY_BYTES

    def _eval_in_chunks(
        self, eval_fn: Callable[[Any], Any], batch: Any, combine: Callable | None = None
    ) -> Any:
        """`eval_fn(batch)` run on slices of at most `eval_examples_per_forward()`
        examples, the slices' results combined (default: added).

        With the default, `eval_fn` must return sums (a tensor, a dict/tuple/list of
        them, or numbers) so that the result equals the unchunked one up to float
        summation order; `combine=torch.cat`-like functions take the list of per-slice
        results (e.g. predictions). Every tensor of `batch` (also inside dicts and
        tuples) is sliced along dim 0.
        """
        cap = self.eval_examples_per_forward()
        size = batch_size_of(batch)
        if cap is None or size is None or size <= cap:
            return eval_fn(batch)
        parts = [
            eval_fn(slice_batch(batch, start, min(start + cap, size)))
            for start in range(0, size, cap)
        ]
        if combine is not None:
            return combine(parts)
        total = parts[0]
        for part in parts[1:]:
            total = add_sums(total, part)
        return total

    @staticmethod
    def _one_pass(queue: Iterator, num_examples: int, global_batch_size: int) -> Iterable:
        """The batches of one eval pass of `queue`.

        A queue that knows its pass (`batches_per_pass`: built from at most
        `num_examples` of the data actually present) gives that many batches, so an eval
        stops at the data instead of cycling it; others (synthetic, endless) give
        upstream's ceil(num_examples / global_batch_size) global batches (times the
        queue's `batches_per_global_batch` where it packs one global batch as several
        smaller ones). A queue that ends earlier ends the pass.
        """
        import itertools

        count = getattr(queue, 'batches_per_pass', None)
        if count is None:
            per_global = getattr(queue, 'batches_per_global_batch', 1)
            count = math.ceil(num_examples / global_batch_size) * per_global
        return itertools.islice(queue, count)

    def _eval_count(self, split: str, num_examples: int, present: float | int | None) -> int:
        """min(the spec's count, the examples the pass held): what an eval's sums are divided
        by and what `<split>/num_examples` records. One warning per split when the data
        holds fewer examples than the spec.

        With the full dataset the pass holds at least `num_examples` real examples, so
        the result is `num_examples`, as upstream (synthetic passes of whole batches can
        hold more; upstream divides by `num_examples` then too).
        """
        if present is None:
            return num_examples
        present = int(round(float(present)))
        count = min(num_examples, present)
        counts = self.__dict__.setdefault('_eval_example_counts', {})
        warned = self.__dict__.setdefault('_eval_count_warned', set())
        counts[split] = count
        if present < num_examples and split not in warned:
            warned.add(split)
            _log.warning(
                '%s: the %s data holds %d examples, fewer than the %d of the spec; '
                'evaluating those (%s/num_examples records %d)',
                self.workload_spec.name, split, present, num_examples,
                _LOGGED_SPLIT.get(split, split), count,
            )  # fmt: skip
        return max(count, 1)

    def eval_model(
        self,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        """Upstream's eval, with `validation/num_examples` and `test/num_examples` the
        number of examples the eval actually read (see `_eval_count`)."""
        self.__dict__['_eval_example_counts'] = {}
        metrics = super().eval_model(
            global_batch_size, params, model_state, rng, data_dir, imagenet_v2_data_dir,
            global_step,
        )  # fmt: skip
        for split, count in self.__dict__['_eval_example_counts'].items():
            key = f'{split}/num_examples'
            if key in metrics:
                metrics[key] = count
        return metrics


_LOGGED_SPLIT = {'eval_train': 'train'}


def _positive_int(value, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(number) != str(value).strip():
        raise ValueError(f'{name}={value!r}: must be a positive integer')
    return number


def batch_size_of(batch: Any) -> int | None:
    """Length along dim 0 of the first tensor in `batch` (dicts and tuples searched)."""
    import torch

    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.dim() else None
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (tuple, list)) or isinstance(batch, dict):
        for value in values:
            size = batch_size_of(value)
            if size is not None:
                return size
    return None


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """`batch` with every tensor sliced to [start:stop] along dim 0 (views, no copies)."""
    import torch

    if torch.is_tensor(batch):
        return batch[start:stop] if batch.dim() else batch
    if isinstance(batch, dict):
        return {k: slice_batch(v, start, stop) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, '_fields'):  # A namedtuple.
        return type(batch)(*(slice_batch(v, start, stop) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(slice_batch(v, start, stop) for v in batch)
    return batch


def add_sums(a: Any, b: Any) -> Any:
    """Element-wise a + b over tensors, numbers and dicts/tuples/lists of them."""
    if isinstance(a, dict):
        return {k: add_sums(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        return type(a)(add_sums(x, y) for x, y in zip(a, b))
    return a + b


class EvalPass:
    """An eval split's batches for one pass, cycled (evals reuse them), with the pass length.

    `batches_per_pass` is the pass over the data actually present (`_one_pass` runs that
    many instead of upstream's ceil(num_examples / batch size)); `num_examples`, when
    known, the real examples the pass holds over all ranks.

    Args:
      batches: the pass's batches, kept (e.g. on the device) and cycled; or
      source: an endless iterator that already cycles its pass, with its
        `batches_per_pass` (None: unknown, upstream's count applies).
      num_examples: real examples of the pass over all ranks, when known.
      batches_per_global_batch: smaller batches that stand for one global batch
        (synthetic queues packed for memory-bounded evals; see `_one_pass`).
    """

    def __init__(
        self,
        batches: list | None = None,
        *,
        source: Iterator | None = None,
        batches_per_pass: int | None = None,
        num_examples: int | None = None,
        batches_per_global_batch: int = 1,
    ) -> None:
        import itertools

        if (batches is None) == (source is None):
            raise TypeError('EvalPass takes batches or source')
        if batches is not None:
            self.batches_per_pass = len(batches)
            self._cycle = itertools.cycle(batches)
        else:
            self.batches_per_pass = batches_per_pass
            self._cycle = source
        self.num_examples = num_examples
        self.batches_per_global_batch = batches_per_global_batch

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._cycle)
