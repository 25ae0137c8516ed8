"""ImageNet input queues as the workloads consume them: device batches, mixup, eval padding.

Glues the sample plans (`input_pipeline`) to a loader (`loaders`: DALI, or the PIL
DataLoader where DALI is missing or not wanted) and applies what upstream's
`data_utils.cycle` does after the host-to-device copy: mixup for ViT (alpha 0.2, one
Beta(0.2, 0.2) weight per batch, each example mixed with its predecessor via
``roll(1, 0)``, targets become soft one-hot rows over 1,000 classes).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from workloads.imagenet_resnet import input_pipeline as ip
from workloads.imagenet_resnet import loaders

BACKENDS = ('auto', 'dali', 'pil')
MIXUP_ALPHA = 0.2
NUM_CLASSES = 1000


def mixup(
    inputs: torch.Tensor, targets: torch.Tensor, weight: float, num_classes: int = NUM_CLASSES
):
    """Upstream's `mixup_pytorch`: a convex mix of each example with the previous one."""
    one_hot = F.one_hot(targets, num_classes=num_classes).to(inputs.dtype)
    mixed = weight * inputs + (1.0 - weight) * inputs.roll(1, 0)
    return mixed, weight * one_hot + (1.0 - weight) * one_hot.roll(1, 0)


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f'ImageNet data backend {backend!r}: expected one of {BACKENDS}')
    if backend == 'auto':
        return 'dali' if loaders.dali_available() else 'pil'
    if backend == 'dali' and not loaders.dali_available():
        raise ValueError(
            "ImageNet data backend 'dali': nvidia-dali is not installed (pip install nvidia-dali-cuda130)"
        )
    return backend


def _threads(world_size: int) -> int:
    return max(1, (os.cpu_count() or 2) // max(1, world_size))


def imagenet_queue(
    split: str,
    data_dir: str,
    seed: int,
    global_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    backend: str = 'auto',
    num_examples: int | None = None,
    num_workers: int | None = None,
    use_randaug: bool = False,
    use_mixup: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """This rank's batches of a split: endless for train, endlessly repeated passes for eval.

    Listing the files and choosing the backend happen here, so bad input fails at the
    call, not at the first batch.

    Args:
      split: 'train', 'eval_train', 'validation' or 'test' (then `data_dir` is the
        ImageNet-v2 folder).
      seed: the data seed (first word of the data RandomState).
      global_batch_size: split evenly over `world_size` ranks.
      backend: 'auto' (DALI when installed), 'dali' or 'pil'.
      num_examples: images per eval pass (default: the whole split).
      num_workers: PIL DataLoader workers (default: one per core per rank).
      use_randaug, use_mixup: ViT's train augmentations.

    Returns:
      An iterator of {'inputs': float32 [b, 3, 224, 224], 'targets': int64 [b] (float32 [b, 1000] with
      mixup)}; eval batches add 'weights' float32 [b] (0 marks padding).
    """
    device = device or torch.device('cpu')
    backend = resolve_backend(backend)
    images = ip.split_images(split, data_dir)
    per_device = global_batch_size // world_size
    threads = _threads(world_size)
    workers = threads if num_workers is None else num_workers
    train = split == 'train'
    if train:
        plan = ip.train_plan(len(images), seed, global_batch_size, rank, world_size)
        weights_of = None
    else:
        order = ip.eval_order(
            split, len(images), seed, min(num_examples or len(images), len(images))
        )
        passes = ip.eval_plan(order, global_batch_size, rank, world_size)
        plan = ((0, indices) for indices, _ in itertools.cycle(passes))
        weights_of = itertools.cycle([real for _, real in passes])
    if backend == 'dali':
        batches = loaders.dali_batches(
            images, plan, per_device, train, seed, threads, device, use_randaug
        )
    else:
        pin = device.type == 'cuda'
        batches = loaders.pil_batches(images, plan, train, seed, workers, pin, use_randaug)
    return _device_batches(
        batches, device, per_device, weights_of, seed if use_mixup and train else None
    )


def _device_batches(batches, device, per_device, weights_of, mixup_seed):
    """Copies to the device, mixes up (train, ViT), attaches eval padding weights."""
    mix_rng = None if mixup_seed is None else np.random.default_rng([mixup_seed, 1])
    for inputs, targets in batches:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        batch = {'inputs': inputs, 'targets': targets}
        if mix_rng is not None:
            weight = float(mix_rng.beta(MIXUP_ALPHA, MIXUP_ALPHA))
            batch['inputs'], batch['targets'] = mixup(inputs, targets, weight)
        if weights_of is not None:
            real = next(weights_of)
            weights = torch.zeros(per_device, dtype=torch.float32)
            weights[:real] = 1.0
            batch['weights'] = weights.to(device, non_blocking=True)
        yield batch
