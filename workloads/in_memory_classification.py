"""Softmax-CE classification over arrays held in device memory (MNIST, digits).

Small dev datasets fit on every rank's device (MNIST: 70,000 x 784 float32 =
220 MB), so there is no input pipeline to speak of: each rank keeps the whole
split and, for every global batch of indices drawn from one shared seeded
stream, takes its own contiguous slice. That needs no broadcast (upstream's
rank-0 pipeline sends every rank all N shards) and gives identical data order
for any world size that divides the batch.

Train batches: {'inputs', 'targets'}; eval batches add 'weights' (0 marks
padding of the last batch). Eval sums are all-reduced and divided by the
number of examples, as upstream.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from algoperf import param_utils, spec
from algoperf.errors import DataError
from algoperf.workload_base import EvalPass, SpecWorkload

Arrays = Tuple[np.ndarray, np.ndarray]  # (float32 inputs [N, ...], int64 labels [N])


class _TrainStream:
    """Endless stream of shuffled epochs (batches may straddle epochs).

    Index order depends only on the seed, so `fast_forward(n)` skips n batches
    without touching data: a resumed run sees exactly the batches an
    uninterrupted run would have. A batch larger than the dataset is legal
    (upstream repeats the dataset): it spans several consecutive epochs, each a
    full permutation, so every example appears once per epoch.
    """

    def __init__(self, x, y, seed: int, global_batch_size: int, local: slice) -> None:
        if len(y) == 0:  # _split_tensors refuses empty splits with the file named; a guard here
            raise ValueError('empty train split: no examples to draw batches from.')
        self.x, self.y = x, y
        self.rng = np.random.RandomState(seed % 2**32)
        self.global_batch_size = global_batch_size
        self.local = local
        self.buffer = np.empty(0, dtype=np.int64)

    def _next_indices(self) -> np.ndarray:
        short = self.global_batch_size - len(self.buffer)
        if short > 0:
            # All epochs the batch needs, joined once: appending one epoch at a time re-copied
            # the buffer per epoch, O(batch^2 / n) (a batch of 3e6 over 3 examples never ended).
            epochs = -(-short // len(self.y))
            self.buffer = np.concatenate([self.buffer] + [self.rng.permutation(len(self.y)) for _ in range(epochs)])
        idx, self.buffer = self.buffer[: self.global_batch_size], self.buffer[self.global_batch_size :]
        return idx

    def fast_forward(self, num_batches: int) -> None:
        for _ in range(num_batches):
            self._next_indices()

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, spec.Tensor]:
        idx = torch.from_numpy(self._next_indices()[self.local]).to(self.x.device, non_blocking=True)
        return {'inputs': self.x[idx], 'targets': self.y[idx]}


class InMemoryClassificationWorkload(SpecWorkload):
    """Subclasses provide `_load_split`, `_build_model` and `is_output_params`."""

    # Seed of the fixed permutation that picks the eval_train subset.
    _EVAL_TRAIN_SEED = 0
    # Per-example input shape and number of classes (for synthetic batches).
    input_shape: Tuple[int, ...] = ()
    num_classes: int = 10

    def __init__(self, runtime=None, **kwargs) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self._splits: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._data_dir: Optional[str] = None

    # ---- hooks ---------------------------------------------------------------------------------
    def _load_split(self, split: str, data_dir: str) -> Arrays:
        """Arrays of 'train', 'validation' or 'test' (already normalised)."""
        raise NotImplementedError

    def _build_model(self) -> nn.Module:
        raise NotImplementedError

    # ---- data ----------------------------------------------------------------------------------
    def _split_tensors(self, split: str, data_dir: str) -> Tuple[torch.Tensor, torch.Tensor]:
        source = 'train' if split == 'eval_train' else split
        if source not in self._splits:
            x, y = self._load_split(source, data_dir)
            if len(y) == 0:
                raise DataError(f'{self.workload_spec.name}: the {source} split in {data_dir} holds no examples.')
            device = self.runtime.device
            self._splits[source] = (
                torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device),
                torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device),
            )
        x, y = self._splits[source]
        if split == 'eval_train':
            order = np.random.RandomState(self._EVAL_TRAIN_SEED).permutation(len(y))
            idx = torch.from_numpy(order[: self.num_eval_train_examples]).to(x.device)
            x, y = x[idx], y[idx]
        return x, y

    def _local_slice(self, global_batch_size: int) -> slice:
        world, rank = self.runtime.world_size, self.runtime.rank
        per_device = global_batch_size // world
        return slice(rank * per_device, (rank + 1) * per_device)

    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: Optional[bool] = None,
        repeat_final_dataset: Optional[bool] = None,
        num_batches: Optional[int] = None,
    ) -> Iterator[Dict[str, spec.Tensor]]:
        del cache
        x, y = self._split_tensors(split, data_dir)
        local = self._local_slice(global_batch_size)
        if split == 'train':
            return self._train_stream(x, y, int(data_rng[0]), global_batch_size, local)
        # An eval pass: num_batches (default: the split), at most the split's own batches,
        # so a split smaller than the spec's count is read once, not cycled.
        per_pass = math.ceil(len(y) / global_batch_size)
        if num_batches is not None:
            per_pass = min(per_pass, num_batches)
        stream = self._eval_stream(x, y, global_batch_size, local, repeat_final_dataset, per_pass)
        if not repeat_final_dataset:
            return stream
        return EvalPass(source=stream, batches_per_pass=per_pass)

    def _train_stream(self, x, y, seed, global_batch_size, local) -> '_TrainStream':
        return _TrainStream(x, y, seed, global_batch_size, local)

    def _eval_stream(self, x, y, global_batch_size, local, repeat, num_batches) -> Iterator[Dict[str, spec.Tensor]]:
        n = len(y)
        total = num_batches if num_batches is not None else math.ceil(n / global_batch_size)
        while True:
            for b in range(total):
                start = (b * global_batch_size) % max(n, 1)
                idx = np.arange(start, start + global_batch_size)[local]
                valid = idx < n
                idx = np.where(valid, idx, 0)
                idx_t = torch.from_numpy(idx).to(x.device)
                yield {
                    'inputs': x[idx_t],
                    'targets': y[idx_t],
                    'weights': torch.from_numpy(valid.astype(np.float32)).to(x.device),
                }
            if not repeat:
                return

    def _build_synthetic_input_queue(self, data_rng: spec.RandomState, split: str,
                                     global_batch_size: int) -> Iterator[Dict[str, spec.Tensor]]:
        """Standard-normal inputs and uniform labels made on the device; 4 batches cycled,
        so data selection costs what an ideal input pipeline would (nothing)."""
        per_device = global_batch_size // self.runtime.world_size
        device = self.runtime.device
        gen = torch.Generator(device=device).manual_seed(int(data_rng[0]) + self.runtime.rank)
        pool = []
        for _ in range(4):
            batch = {
                'inputs': torch.randn((per_device, *self.input_shape), generator=gen, device=device),
                'targets': torch.randint(0, self.num_classes, (per_device,), generator=gen, device=device),
            }
            if split != 'train':
                batch['weights'] = torch.ones(per_device, device=device)
            pool.append(batch)
        return itertools.cycle(pool)

    # ---- model ---------------------------------------------------------------------------------
    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        torch.random.manual_seed(int(rng[0]))
        model = self._build_model()
        self._param_shapes = param_utils.pytorch_param_shapes(model)
        self._param_types = param_utils.pytorch_param_types(self._param_shapes)
        model.to(self.runtime.device)
        if self.runtime.distributed:
            device_ids = [self.runtime.local_rank] if self.runtime.device.type == 'cuda' else None
            model = DDP(model, device_ids=device_ids)
        return model, None

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: Dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float = 0.0,
    ) -> Tuple[spec.Tensor, spec.ModelAuxiliaryState]:
        del model_state, rng, update_batch_norm, dropout_rate
        model = params
        if mode == spec.ForwardPassMode.EVAL:
            model.eval()
        else:
            model.train()
        context = torch.no_grad if mode == spec.ForwardPassMode.EVAL else contextlib.nullcontext
        with context():
            logits = model(augmented_and_preprocessed_input_batch['inputs'])
        return logits, None

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: Optional[spec.Tensor] = None,
        label_smoothing: float = 0.0,
    ) -> Dict[str, spec.Tensor]:
        per_example = F.cross_entropy(logits_batch, label_batch, reduction='none', label_smoothing=label_smoothing)
        if mask_batch is not None:
            per_example = per_example * mask_batch
            n_valid = mask_batch.sum()
        else:
            n_valid = torch.tensor(len(per_example), device=per_example.device, dtype=per_example.dtype)
        return {'summed': per_example.sum(), 'n_valid_examples': n_valid, 'per_example': per_example}

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> Dict[str, float]:
        del global_step
        if split not in self._eval_iters:
            self._eval_iters[split] = self._build_input_queue(
                rng, split, data_dir, global_batch_size, cache=True, repeat_final_dataset=True,
                num_batches=math.ceil(num_examples / global_batch_size),
            )  # fmt: skip
        stream = self._eval_iters[split]

        def batch_sums(batch):
            logits, _ = self.model_fn(params, batch, None, spec.ForwardPassMode.EVAL, rng, False)
            weights = batch['weights']
            correct = ((logits.argmax(dim=-1) == batch['targets']) * weights).sum()
            loss = self.loss_fn(batch['targets'], logits, weights)['summed']
            return torch.stack([correct.double(), loss.double(), weights.sum().double()])

        # float64 sums: 10,000 per-example losses in float32 lose ~4 digits.
        totals = torch.zeros(3, dtype=torch.float64, device=self.runtime.device)
        # One pass: upstream's ceil(num_examples / batch) batches, or the split's when it
        # holds fewer examples (then the sums are divided by those; see `_eval_count`).
        for batch in self._one_pass(stream, num_examples, global_batch_size):
            totals += self._eval_in_chunks(batch_sums, batch)
        if self.runtime.distributed:
            dist.all_reduce(totals)
        correct, loss, present = totals.tolist()
        count = self._eval_count(split, num_examples, present)
        return {'accuracy': correct / count, 'loss': loss / count}
