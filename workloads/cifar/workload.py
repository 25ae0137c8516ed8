"""CIFAR-10 ResNet-18 development workload in PyTorch.

Upstream: `algoperf/workloads/cifar/workload.py` (base class) and
`cifar_pytorch/workload.py` (snapshot 2c90454). Kept as upstream: the model
(`models.py`), `model_fn` with `update_batch_norm` (shared with ImageNet ResNet; see
`workloads/imagenet_resnet/workload.py`; upstream's CIFAR `model_fn` has no dropout
argument, ours accepts and ignores one), the loss, the eval metrics `{'accuracy',
'loss'}`, `is_output_params`, the splits, augmentation and normalisation
(`input_pipeline.py`). Constants come from `spec.py`. Upstream's `init_model_fn`
re-initialises and returns the same model object when called twice; ours builds a new
one each call.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from algoperf import spec
from workloads.cifar import input_pipeline, models
from workloads.cifar.spec import CIFAR
from workloads.imagenet_resnet.workload import ImageClassificationWorkload


class CifarWorkload(ImageClassificationWorkload):
    """ResNet-18 (CIFAR stem) on CIFAR-10 (upstream `CifarWorkload`)."""

    workload_spec = CIFAR
    num_classes = 10
    input_shape = (3, 32, 32)
    _repeat_all_eval_splits = True  # Upstream builds every eval iterator cached and repeated.

    def __init__(self, runtime=None, **kwargs) -> None:
        super().__init__(runtime=runtime, **kwargs)
        self._sources: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _build_model(self) -> torch.nn.Module:
        return models.resnet18(num_classes=self.num_classes)

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        return param_key in ('fc.weight', 'fc.bias')

    # ---- data ----------------------------------------------------------------------------------
    def validate_data_dir(self, data_dir: str) -> None:
        """FileNotFoundError naming the missing CIFAR-10 batch files."""
        missing = input_pipeline.missing_files(data_dir)
        if missing:
            raise FileNotFoundError(
                f'--data_dir={data_dir}: {", ".join(missing)} not found (CIFAR-10); '
                f'expected {input_pipeline.LAYOUT}.'
            )

    def _source(self, data_dir: str, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Device uint8 images and int64 labels of 'train' or 'test', loaded once."""
        if source not in self._sources:
            images, labels = input_pipeline.load_source(data_dir, source)
            device = self.runtime.device
            self._sources[source] = (
                torch.from_numpy(np.ascontiguousarray(images)).to(device),
                torch.from_numpy(labels).to(device),
            )
        return self._sources[source]

    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
    ) -> Iterator[dict[str, spec.Tensor]]:
        """This rank's batches of `split`, on the device (see `input_pipeline`)."""
        del num_batches
        if split == 'test':
            if not cache:
                raise ValueError('cache must be True for split=test.')
            if not repeat_final_dataset:
                raise ValueError('repeat_final_dataset must be True for split=test.')
        images, labels = self._source(data_dir, 'test' if split == 'test' else 'train')
        indices = input_pipeline.split_indices(
            split,
            self.num_train_examples,
            self.num_validation_examples,
            self.num_eval_train_examples,
            len(labels),
            data_rng,
        )
        idx = torch.from_numpy(indices).to(images.device)
        images, labels = images[idx], labels[idx]
        rank, world = self.runtime.rank, self.runtime.world_size
        if split == 'train':
            return input_pipeline.TrainStream(
                images, labels, data_rng, global_batch_size, rank, world
            )
        return input_pipeline.eval_stream(images, labels, global_batch_size, rank, world)
