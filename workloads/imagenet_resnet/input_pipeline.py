"""ImageNet input pipelines: DALI (fast path) and torch DataLoader + PIL (reference, fallback).

Layout, as upstream's PyTorch side reads it with torchvision's `ImageFolder` (spec §6.3):
``<data_dir>/train/<wnid>/*.JPEG`` and ``<data_dir>/val/<wnid>/*.JPEG`` (the validation
images sorted into class folders, e.g. with the usual `valprep.sh`); labels are the
indices of the sorted class folder names, files are sorted within a class. The test split
is ImageNet-v2 matched-frequency as published (``imagenetv2-matched-frequency-format-val/
<class index>/<hash>.jpeg``, 10,000 images; folder names are the label), passed as
``--imagenet_v2_data_dir``.

Sample plans (shared by both backends, so they read the same images in the same order):
    * train: a permutation per epoch from ``default_rng([seed, epoch])``; each global batch
      is consecutive, rank r takes its slice of it, the last incomplete global batch of an
      epoch is dropped (upstream: `DistributedSampler` + ``drop_last``).
    * eval_train: upstream's subset, ``random.Random(seed).shuffle(range(num_train))`` cut
      to ``num_eval_train_examples``, in that order.
    * validation, test: file order. Eval global batches are cut in order and the last is
      padded (``weights`` 0) so every rank runs the same number of equal-shape batches.
Augmentation randomness is a function of (seed, epoch, index) in the PIL path (any number
of workers gives the same batches) and of the pipeline seed in DALI's.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# torchvision's IMG_EXTENSIONS, matched case-insensitively as ImageFolder does.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
LAYOUT = '<data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG'
V2_LAYOUT = (
    '<imagenet_v2_data_dir>/<class index 0..999>/*.jpeg (imagenetv2-matched-frequency-format-val)'
)


@dataclass(frozen=True)
class ImageList:
    """Files of one split and their integer labels."""

    paths: tuple[str, ...]
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.paths)


def _class_files(class_dir: str) -> list[str]:
    found = []
    for root, _, files in sorted(os.walk(class_dir, followlinks=True)):
        found += [
            os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def list_image_folder(root: str, int_class_names: bool = False) -> ImageList:
    """`ImageFolder`'s samples: sorted class folders -> labels 0.., sorted files within each.

    Args:
      root: the split's folder.
      int_class_names: folder names are the labels themselves (ImageNet-v2's layout).

    Raises:
      FileNotFoundError: naming `root` when it is missing or holds no images.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f'{root}: directory not found; expected {V2_LAYOUT if int_class_names else LAYOUT}'
        )
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if int_class_names:
        bad = [c for c in classes if not c.isdigit()]
        if bad:
            raise ValueError(
                f'{root}: class folder {bad[0]!r} is not an integer label; expected {V2_LAYOUT}'
            )
        classes = sorted(classes, key=int)
    paths, labels = [], []
    for index, name in enumerate(classes):
        files = _class_files(os.path.join(root, name))
        paths += files
        labels += [int(name) if int_class_names else index] * len(files)
    if not paths:
        raise FileNotFoundError(
            f'{root}: no images found; expected {V2_LAYOUT if int_class_names else LAYOUT}'
        )
    return ImageList(tuple(paths), np.asarray(labels, dtype=np.int64))


def split_images(split: str, data_dir: str, imagenet_v2_data_dir: str | None = None) -> ImageList:
    if split == 'test':
        return list_image_folder(imagenet_v2_data_dir or data_dir, int_class_names=True)
    return list_image_folder(
        os.path.join(data_dir, 'train' if split in ('train', 'eval_train') else 'val')
    )


def train_plan(
    n: int, seed: int, global_batch_size: int, rank: int, world_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Endless (epoch, sample indices of this rank's batch), epoch after epoch."""
    per_device = global_batch_size // world_size
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for start in range(0, n - global_batch_size + 1, global_batch_size):
            first = start + rank * per_device
            yield epoch, order[first : first + per_device]
        epoch += 1


def eval_order(split: str, n: int, seed: int, num_examples: int) -> np.ndarray:
    """Samples an eval reads, in order (eval_train: upstream's `random.Random` subset)."""
    if split == 'eval_train':
        indices = list(range(n))
        random.Random(seed).shuffle(indices)
        return np.asarray(indices[:num_examples], dtype=np.int64)
    return np.arange(min(num_examples, n), dtype=np.int64)


def eval_plan(
    order: np.ndarray, global_batch_size: int, rank: int, world_size: int
) -> list[tuple[np.ndarray, int]]:
    """(sample indices, number of real ones) of this rank's eval batches; padding repeats index 0."""
    per_device = global_batch_size // world_size
    plan = []
    for start in range(0, len(order), global_batch_size):
        mine = order[start + rank * per_device : start + (rank + 1) * per_device]
        real = len(mine)
        padded = np.concatenate([mine, np.full(per_device - real, order[0], dtype=np.int64)])
        plan.append((padded, real))
    return plan
