"""CIFAR-10 reader: upstream's files, splits, augmentation and normalisation, per rank.

Upstream (`cifar_pytorch/workload.py`) reads torchvision's `CIFAR10(root=data_dir)`,
i.e. the python version of CIFAR-10 under `<data_dir>/cifar-10-batches-py/`: pickled
dicts with b'data' uint8 [10000, 3072] (channel-major 3 x 32 x 32 rows) and b'labels',
in `data_batch_1` ... `data_batch_5` (train, 50,000, concatenated in that order) and
`test_batch` (10,000). Splits: 'train' = the first 45,000 train images, 'validation' =
the last 5,000, 'eval_train' = the first `num_eval_train_examples` of the train
indices shuffled by `random.Random(data_rng[0])`, 'test' = `test_batch`.
Train images get `RandomCrop(32, padding=4)` (zero padding) and a horizontal flip with
probability 1/2; every split is `ToTensor` (/255) then `Normalize(mean, std)` with
upstream's per-channel statistics.

Here the whole uint8 data set (150 MB) sits on the device and batches are gathered and
augmented there, vectorised, instead of a 4-worker PIL DataLoader per rank:

- Train order is upstream's DDP order (`DistributedSampler(shuffle=True)`, seed 0):
  epoch e permutes the train indices with `torch.randperm(n, generator=seed 0 + e)`,
  pads to a multiple of the world size with its own head, and rank r takes every
  world-size-th index from r; batches of `global_batch_size // world_size`, the last
  partial one dropped. Unlike upstream's `data_utils.cycle`, the epoch advances, so
  each epoch has a new order. Crop offsets and flips come from a device generator
  seeded by `data_rng[0]` + rank (upstream: torch's global RNG in the workers).
- Eval batches are global batches of consecutive examples, the last zero-padded with
  `weights` 1/0; rank r gets rows [r*b, (r+1)*b) (upstream's eval sampler gives ranks
  interleaved, unpadded shards; the sums are the same). They repeat forever.

Batches: `inputs` float32 [b, 3, 32, 32], `targets` int64 [b]; eval adds `weights`
float32 [b].
"""

from __future__ import annotations

import math
import os
import pickle
import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from algoperf.errors import DataError

SUBDIR = 'cifar-10-batches-py'
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILE = 'test_batch'
LAYOUT = f'<data_dir>/{SUBDIR}/{{{",".join(TRAIN_FILES)},{TEST_FILE}}} (CIFAR-10 python version)'
MEAN = (0.49139968, 0.48215827, 0.44653124)
STD = (0.24703233, 0.24348505, 0.26158768)
CROP_SIZE = 32
PADDING = 4
# DistributedSampler's default seed, which upstream's DDP train loader uses.
TRAIN_ORDER_SEED = 0


def batches_dir(data_dir: str) -> str:
    """`<data_dir>/cifar-10-batches-py` (torchvision's layout), else `data_dir` itself."""
    sub = os.path.join(data_dir, SUBDIR)
    return sub if os.path.isdir(sub) else data_dir


def missing_files(data_dir: str) -> list[str]:
    root = batches_dir(data_dir)
    return [
        os.path.join(root, f)
        for f in (*TRAIN_FILES, TEST_FILE)
        if not os.path.isfile(os.path.join(root, f))
    ]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays, and refuses every other global.

    A plain `pickle.load` runs whatever callable a file names (`os.system` included);
    the CIFAR-10 batches need only numpy's array reconstructors (protocol 2, as the
    published files, and protocol 5's buffer form).
    """

    _ALLOWED = frozenset(
        {
            ('numpy.core.multiarray', '_reconstruct'),
            ('numpy._core.multiarray', '_reconstruct'),
            ('numpy.core.numeric', '_frombuffer'),
            ('numpy._core.numeric', '_frombuffer'),
            ('numpy', 'ndarray'),
            ('numpy', 'dtype'),
            (
                '_codecs',
                'encode',
            ),  # Protocol 2 from Python 3 writes bytes as encode(str, 'latin1').
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'refusing to load {module}.{name} (only numpy arrays)')


def load_batch_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 3, 32, 32], int64 [N]) from one pickled CIFAR-10 batch file."""
    with open(path, 'rb') as f:
        try:
            entry = _ArrayUnpickler(f, encoding='bytes').load()
        except Exception as e:
            raise DataError(f'cifar: {path} is not a CIFAR-10 python batch file ({e}).') from e
    get = lambda key: entry.get(key.encode(), entry.get(key)) if isinstance(entry, dict) else None
    data, labels = get('data'), get('labels')
    if data is None or labels is None:
        raise DataError(f"cifar: {path} has no 'data' and 'labels' entries.")
    data = np.asarray(data)
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f'cifar: {path}: labels are not integers ({e}).') from e
    if labels.ndim != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= 10)):
        raise DataError(f'cifar: {path}: labels must be a list of class ids 0..9.')
    if (
        data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or len(data) != len(labels)
    ):
        raise DataError(
            f'cifar: {path}: expected uint8 data [N, 3072] and N labels, got '
            f'{data.dtype} {list(data.shape)} and {len(labels)} labels.'
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_source(data_dir: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """'train' (the 5 train files, concatenated in order) or 'test'."""
    root = batches_dir(data_dir)
    files = TRAIN_FILES if source == 'train' else (TEST_FILE,)
    parts = [load_batch_file(os.path.join(root, f)) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def split_indices(
    split: str, num_train: int, num_validation: int, num_eval_train: int, total: int, data_rng
) -> np.ndarray:
    """Indices into the source array of `split` (upstream's subsets)."""
    if split == 'test':
        return np.arange(total)
    if total != num_train + num_validation:
        raise DataError(
            f'cifar: the train files hold {total} images; expected {num_train} train + '
            f'{num_validation} validation.'
        )
    if split == 'train':
        return np.arange(num_train)
    if split == 'validation':
        return np.arange(num_train, total)
    if split == 'eval_train':
        indices = list(range(num_train))
        random.Random(int(data_rng[0])).shuffle(indices)
        return np.asarray(indices[:num_eval_train])
    raise ValueError(f'cifar: unknown split {split!r}.')


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [b, 3, H, W] -> float32, `ToTensor` then `Normalize(MEAN, STD)`."""
    x = images.float().div_(255)
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image: zero-pad by 4, crop 32 x 32 at a uniform offset in [0, 8]², flip w.p. 1/2."""
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (PADDING, PADDING, PADDING, PADDING))
    offsets = torch.randint(0, 2 * PADDING + 1, (2, b), generator=generator, device=device)
    flip = torch.rand(b, generator=generator, device=device) < 0.5
    ar_h, ar_w = torch.arange(h, device=device), torch.arange(w, device=device)
    rows = offsets[0, :, None] + ar_h  # [b, h]
    cols = offsets[1, :, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # [b, w]
    batch_idx = torch.arange(b, device=device)[:, None, None, None]
    chan_idx = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


def sampler_indices(n: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's indices of one epoch, as `DistributedSampler(shuffle=True, seed=0)`."""
    g = torch.Generator().manual_seed(TRAIN_ORDER_SEED + epoch)
    order = torch.randperm(n, generator=g)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        order = torch.cat([order, order[: total - n]])
    return order[rank:total:world_size]


class TrainStream:
    """Endless augmented train batches of this rank (see the module docstring)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        data_rng,
        global_batch_size: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.images, self.labels = images, labels
        self.local_batch_size = global_batch_size // world_size
        self.rank, self.world_size = rank, world_size
        if len(labels) // world_size < self.local_batch_size:
            raise ValueError(
                f'cifar: {len(labels)} train images give no batch of {global_batch_size}.'
            )
        self.generator = torch.Generator(device=images.device).manual_seed(int(data_rng[0]) + rank)
        self.epoch = 0
        self._batches = self._epoch_batches()

    def _epoch_batches(self) -> Iterator[torch.Tensor]:
        indices = sampler_indices(len(self.labels), self.epoch, self.rank, self.world_size)
        indices = indices.to(self.images.device)
        b = self.local_batch_size
        for start in range(0, len(indices) - b + 1, b):  # drop_last
            yield indices[start : start + b]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        idx = next(self._batches, None)
        if idx is None:
            self.epoch += 1
            self._batches = self._epoch_batches()
            idx = next(self._batches)
        images = random_crop_flip(self.images[idx], self.generator)
        return {'inputs': normalize(images), 'targets': self.labels[idx]}


def eval_stream(
    images: torch.Tensor,
    labels: torch.Tensor,
    global_batch_size: int,
    rank: int,
    world_size: int,
    repeat: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Padded global batches of consecutive examples; this rank's rows, with weights.

    The stream knows its pass (`batches_per_pass`, from the examples actually present), so an
    eval of a split smaller than the spec's count reads it once instead of cycling it.
    """
    n = len(labels)
    if n == 0:
        raise ValueError('cifar: an empty eval split.')
    return _EvalStream(_eval_batches(images, labels, global_batch_size, rank, world_size, repeat),
                       math.ceil(n / global_batch_size))


class _EvalStream:
    """An eval iterator with its pass length (read by SpecWorkload._one_pass)."""

    def __init__(self, batches: Iterator[dict[str, torch.Tensor]], batches_per_pass: int) -> None:
        self._batches = batches
        self.batches_per_pass = batches_per_pass

    def __iter__(self) -> '_EvalStream':
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return next(self._batches)


def _eval_batches(images, labels, global_batch_size, rank, world_size, repeat):
    n, device = len(labels), images.device
    b = global_batch_size // world_size
    while True:
        for start in range(0, n, global_batch_size):
            rows = torch.arange(start + rank * b, start + (rank + 1) * b, device=device)
            valid = rows < n
            idx = torch.where(valid, rows, torch.zeros_like(rows))
            yield {
                'inputs': normalize(images[idx]),
                'targets': labels[idx],
                'weights': valid.float(),
            }
        if not repeat:
            return
