"""ImageNet input pipelines: DALI (fast path) and torch DataLoader + PIL (reference, fallback).

Layout, as upstream's PyTorch side reads it with torchvision's `ImageFolder` (spec §6.3):
``<data_dir>/train/<wnid>/*.JPEG`` and ``<data_dir>/val/<wnid>/*.JPEG`` (the validation
images sorted into class folders, e.g. with the usual `valprep.sh`); labels are the
indices of the sorted class folder names, files are sorted within a class. Unlike
`ImageFolder`, which labels each split by its own folders, both splits take their labels
from the union of the wnid folders of ``train/`` and ``val/`` (with 1,000 or more, it must
be ImageNet-1k's published list, `wnids.json`), so a folder missing from one split cannot
shift the other's labels; a folder that is not a wnid (``lost+found``) or holds no image,
and a folder reached twice through symlinks, are refused with the path (`DataError`),
never skipped or given a label. The test split
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

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from algoperf.errors import DataError

# torchvision's IMG_EXTENSIONS, matched case-insensitively as ImageFolder does.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
LAYOUT = '<data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG'
NUM_CLASSES = 1000
WNIDS_FILE = 'wnids.json'  # ImageNet-1k's wnids, sorted (`published_wnids`).
WNID_PATTERN = re.compile(r'n\d{8}')
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


def published_wnids() -> tuple[str, ...]:
    """ImageNet-1k's 1,000 WordNet ids, sorted: position = upstream's class index.

    `wnids.json` beside this file holds the ILSVRC-2012 synsets as the devkit lists them
    (the same list as timm's `imagenet_synsets.txt` and Kaggle's `LOC_synset_mapping.txt`;
    n01440764 tench is 0, n02123045 tabby 281, n15075141 toilet tissue 999).
    """
    with open(os.path.join(os.path.dirname(__file__), WNIDS_FILE)) as f:
        return tuple(json.load(f))


def _raise_listing_error(e: OSError) -> None:
    raise DataError(f'{e.filename}: cannot list folder ({e.strerror})') from e


def _folder_identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _class_files(class_dir: str, seen: dict[tuple[int, int], str]) -> list[str]:
    """ImageFolder's files of one class: sorted by folder, then by name.

    Symlinked folders are followed (as `ImageFolder`'s `os.walk(followlinks=True)`), but a
    folder reached a second time, through a loop (`a/loop -> ..`: 4 images became 164
    before this check) or through another class's link, is refused: `seen` maps every
    folder of the split walked so far to the path it was first reached by.
    """
    seen.setdefault(_folder_identity(class_dir), class_dir)
    found = []
    for root, dirs, files in os.walk(class_dir, onerror=_raise_listing_error, followlinks=True):
        for d in dirs:
            path = os.path.join(root, d)
            first = seen.setdefault(_folder_identity(path), path)
            if first != path:
                raise DataError(
                    f'{path}: reaches the folder {first} a second time (a symlink loop or a '
                    'duplicate); remove the link, each image must be listed once'
                )
        found.append((root, sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))))
    return [os.path.join(root, f) for root, files in sorted(found) for f in files]


def _class_folders(root: str, int_class_names: bool) -> list[str]:
    """The class folder names directly under `root`; a name that cannot be a class is refused.

    A stray folder (`lost+found`, `.ipynb_checkpoints`, a misspelt wnid) is refused rather
    than ignored: as a class it would take a label index and shift every later class by
    one relative to the other split, and skipping it silently could hide a real class
    under a wrong name.
    """
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as e:
        _raise_listing_error(e)
    for name in names:
        if int_class_names and not name.isdigit():
            raise DataError(
                f'{root}: class folder {name!r} is not an integer label; expected {V2_LAYOUT}'
            )
        if not int_class_names and not WNID_PATTERN.fullmatch(name):
            raise DataError(
                f'{os.path.join(root, name)}: not a class folder (WordNet id n########); move '
                f'it out of {root}, it would take a label index; expected {LAYOUT}'
            )
    return sorted(names, key=int) if int_class_names else names


def class_names(data_dir: str) -> list[str]:
    """The labels of train and val: the sorted union of the wnid folders both splits hold.

    One list for both splits, so a class missing from one split cannot shift the other's
    labels. When the union has 1,000 or more folders it must be ImageNet's published
    1,000 (`published_wnids`): a different set would give the model labels that mean
    other classes, or indices past its 1,000 outputs.
    """
    names: set[str] = set()
    for sub in ('train', 'val'):
        root = os.path.join(data_dir, sub)
        if os.path.isdir(root):
            names.update(_class_folders(root, int_class_names=False))
    if len(names) >= NUM_CLASSES:
        published = set(published_wnids())
        unknown = sorted(names - published)
        if unknown:
            where = [sub for sub in ('train', 'val')
                     if os.path.isdir(os.path.join(data_dir, sub, unknown[0]))]  # fmt: skip
            raise DataError(
                f"{os.path.join(data_dir, where[0], unknown[0])}: not one of ImageNet-1k's "
                f'{NUM_CLASSES} published wnids ({len(names)} class folders in train/ and val/ '
                f'together, {len(unknown)} unknown); expected {LAYOUT}'
            )
    return sorted(names)


def list_image_folder(
    root: str, int_class_names: bool = False, classes: list[str] | None = None
) -> ImageList:
    """`ImageFolder`'s samples: sorted class folders -> labels 0.., sorted files within each.

    Args:
      root: the split's folder.
      int_class_names: folder names are the labels themselves (ImageNet-v2's layout).
      classes: the label list (`class_names`: both splits' union); default the folders
        of `root`.

    Raises:
      FileNotFoundError: naming `root` when it is missing or holds no images.
      DataError: naming a stray or empty class folder, or a folder reached twice
        through symlinks.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f'{root}: directory not found; expected {V2_LAYOUT if int_class_names else LAYOUT}'
        )
    folders = _class_folders(root, int_class_names)
    index = {name: i for i, name in enumerate(folders if classes is None else classes)}
    paths, labels, seen = [], [], {}
    for name in folders:
        class_dir = os.path.join(root, name)
        files = _class_files(class_dir, seen)
        if not files:
            # torchvision's ImageFolder refuses an empty class too ("Found no valid file").
            raise DataError(
                f'{class_dir}: class folder holds no images ({", ".join(IMAGE_EXTENSIONS)}); '
                'remove it or fill it'
            )
        paths += files
        labels += [int(name) if int_class_names else index[name]] * len(files)
    if not paths:
        raise FileNotFoundError(
            f'{root}: no images found; expected {V2_LAYOUT if int_class_names else LAYOUT}'
        )
    return ImageList(tuple(paths), np.asarray(labels, dtype=np.int64))


def split_images(split: str, data_dir: str, imagenet_v2_data_dir: str | None = None) -> ImageList:
    if split == 'test':
        return list_image_folder(imagenet_v2_data_dir or data_dir, int_class_names=True)
    return list_image_folder(
        os.path.join(data_dir, 'train' if split in ('train', 'eval_train') else 'val'),
        classes=class_names(data_dir),
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
