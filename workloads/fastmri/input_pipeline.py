"""fastMRI knee single-coil input pipeline: upstream's files, splits and preprocessing, per rank.

Upstream (algoperf/workloads/fastmri/input_pipeline.py, spec §6.2) runs one tf.data pipeline
on rank 0 and broadcasts every global batch. Here every rank computes the same (cheap)
order of slice indices and then reads and preprocesses only its own slices with h5py and
torch.fft, so nothing is broadcast and the FFT work is split across ranks.

Semantics kept from upstream:
    * Files: train and eval_train = ``<data_dir>/knee_singlecoil_train/*.h5``; validation =
      the first 100 of the sorted ``<data_dir>/knee_singlecoil_val/*.h5``; test = the rest.
    * Examples are the slices of the files in file order (upstream interleaves with
      ``block_length=64``; every knee volume has fewer than 64 slices, so its stream is the
      files' slices one file after another). ``example_index`` is the position in it.
    * Per slice (``process_slice``): column mask = ``num_low = int(W * 0.08)`` centred
      columns (from ``(W - num_low + 1) // 2``) OR ``uniform(W) < (W/4 - num_low) / (W -
      num_low)``, all in float32; ``image = fftshift(ifft2(ifftshift(kspace * mask)))``
      times ``sqrt(H * W)`` (orthonormal inverse FFT, shifts over both axes); centre crop
      to the target's 320 x 320 at ``((H - 320) // 2, (W - 320) // 2)``; magnitude;
      ``(x - mean) / std`` with the crop's mean and population std (no epsilon, as
      upstream); clip to [-6, 6]; the ``reconstruction_esc`` target normalised with the
      same mean/std and clipped. ``volume_max`` is the file's ``max`` attribute (0.0 if
      absent).
    * The mask's randomness is a function of (``data_rng``, ``example_index``) for train and
      eval_train (so a slice gets the same mask every epoch, as upstream's
      ``enumerate()`` before ``repeat()`` gives), and one fixed seed for validation and test
      (upstream's ``PRNGKey(_EVAL_SEED=0)``: every eval slice of a given width gets the same
      mask).
    * train and eval_train are shuffled with a buffer of ``16 * global_batch_size``,
      reshuffled each epoch; train repeats forever and its batches run across epoch ends
      (``shuffle().repeat().batch(drop_remainder=True)``); eval splits are one pass with
      the last batch zero-padded to the global batch and ``weights`` 1/0, cut to
      ``num_batches`` and replayed from a cache with ``repeat_final_dataset``.
    * Batch keys as upstream's PyTorch workload receives them: ``inputs``, ``targets``
      float32 [b, 320, 320]; ``mean``, ``std``, ``volume_max`` float32 [b]; eval splits add
      ``weights`` float32 [b]. Rank ``r`` gets rows ``[r*b, (r+1)*b)`` of each global batch.
Deliberate differences (upstream's randomness is TF's and not reproducible without TF):
    * Mask uniforms: upstream draws ``tf.random.stateless_uniform((W,), seed)`` with seed
      ``stateless_fold_in(jax.random.fold_in(data_rng, 0), example_index)`` (train,
      eval_train) or ``PRNGKey(0)`` (eval). Here they are ``numpy.random.default_rng(
      [data_rng[0], data_rng[1], 0, example_index]).random(W, dtype=float32)`` and
      ``default_rng([0, 0])`` respectively: same keys, same structure, different bits.
    * Shuffle: the same buffer algorithm as tf.data's ``shuffle`` (fill the buffer, emit a
      uniformly chosen element, refill its place), driven by ``default_rng([data_rng[0],
      epoch])`` instead of TF's seeded generator.
    * Train file order: sorted (upstream's ``glob.glob`` order is the file system's).
"""

from __future__ import annotations

import functools
import glob
import os
from collections import OrderedDict
from collections.abc import Iterator

import h5py
import numpy as np
import torch

from algoperf.data_io import check_dtype
from algoperf.errors import DataError

TRAIN_DIR = 'knee_singlecoil_train'
VAL_DIR = 'knee_singlecoil_val'
NUM_VALIDATION_FILES = 100  # The first 100 sorted val files; the rest are the test split.
SPLITS = ('train', 'eval_train', 'validation', 'test')
CENTER_FRACTION = 0.08
ACCELERATION = 4.0
CLIP = 6.0
EVAL_SEED = 0  # Upstream's _EVAL_SEED: PRNGKey(0) == [0, 0].
SHUFFLE_BUFFER_BATCHES = 16  # Upstream's shuffle buffer is 16 * global_batch_size.
_MAX_OPEN_FILES = 64
TARGET_SHAPE = (320, 320)  # reconstruction_esc per slice: the model's output size.
LAYOUT = (
    '<data_dir>/knee_singlecoil_train/*.h5 and <data_dir>/knee_singlecoil_val/*.h5 '
    "(datasets 'kspace' complex64 (slices, 640, W), 'reconstruction_esc' float32 "
    "(slices, 320, 320), attribute 'max')"
)


def split_files(split: str, data_dir: str) -> list[str]:
    """Upstream's h5 files of ``split``: train sorted, validation/test the sorted val files cut at 100."""
    if split not in SPLITS:
        raise ValueError(f'fastmri: unknown split {split!r}; expected one of {SPLITS}')
    for sub in (TRAIN_DIR, VAL_DIR):  # upstream checks both whatever the split
        path = os.path.join(data_dir, sub)
        if not os.path.isdir(path):
            raise FileNotFoundError(f'fastmri: directory {path!r} not found; expected {LAYOUT}')
    sub = TRAIN_DIR if split in ('train', 'eval_train') else VAL_DIR
    files = sorted(glob.glob(os.path.join(glob.escape(os.path.join(data_dir, sub)), '*.h5')))
    if split == 'validation':
        files = files[:NUM_VALIDATION_FILES]
    elif split == 'test':
        files = files[NUM_VALIDATION_FILES:]
    if not files:
        where = os.path.join(data_dir, sub)
        which = ' beyond the first 100 sorted ones' if split == 'test' else ''
        raise FileNotFoundError(
            f'fastmri: no {split} files (*.h5{which}) in {where!r}; expected {LAYOUT}'
        )
    return files


def sample_mask(num_cols: int, uniform: np.ndarray) -> np.ndarray:
    """Upstream's column mask (float32 [num_cols]) from ``num_cols`` float32 uniforms in [0, 1)."""
    cols = np.float32(num_cols)
    num_low = int(cols * np.float32(CENTER_FRACTION))  # tf.cast(float -> int32) truncates
    mask = np.zeros(num_cols, np.float32)
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = 1.0
    low = np.float32(num_low)
    prob = (cols / np.float32(ACCELERATION) - low) / (cols - low)
    return np.maximum(mask, (uniform < prob).astype(np.float32))


def mask_rng(split: str, data_rng, example_index: int) -> np.random.Generator:
    """The generator of one example's mask uniforms (see the module docstring)."""
    if split in ('train', 'eval_train'):
        key = [int(v) for v in np.asarray(data_rng, dtype=np.int64).reshape(-1)[:2]]
        return np.random.default_rng([*key, 0, int(example_index)])
    return np.random.default_rng([EVAL_SEED, EVAL_SEED])


@functools.lru_cache(maxsize=16)
def _checkerboard(height: int, width: int) -> np.ndarray:
    """float32 (-1)^(i + j): moves the zero frequency like ifftshift/fftshift on even sizes."""
    return np.where((np.arange(height)[:, None] + np.arange(width)) % 2 == 0, 1, -1).astype(
        np.float32
    )


def process_slice(
    kspace: np.ndarray, target: np.ndarray, volume_max: float, uniform: np.ndarray
) -> dict[str, torch.Tensor]:
    """One slice -> {'inputs', 'targets' [320, 320], 'mean', 'std', 'volume_max' []} float32.

    numpy (pocketfft, one thread per call): per-slice work is ~2 ms, too small for torch's
    thread pool, which slowed it 2-20x when cores were shared (benchmarks/workloads/
    bench_fastmri_pipeline.py).

    Args:
        kspace: complex64 [H, W] k-space of the slice.
        target: float32 [h, w] ``reconstruction_esc`` slice (h, w <= H, W).
        volume_max: the volume's ``max`` attribute.
        uniform: float32 [W] uniforms in [0, 1) for the random part of the column mask.
    """
    h_full, w_full = kspace.shape
    masked = np.asarray(kspace, dtype=np.complex64) * sample_mask(w_full, uniform)
    # ifft2d divides by H*W; upstream then multiplies by sqrt(H*W): the orthonormal inverse.
    if h_full % 2 == 0 and w_full % 2 == 0:
        # For even sizes fftshift(ifft2(ifftshift(x)))[n] = (-1)^(n - N/2) ifft2(x (-1)^k)[n]
        # per axis; the sign vanishes in the magnitude, so no array is rolled.
        image = np.fft.ifft2(masked * _checkerboard(h_full, w_full), norm='ortho')
    else:
        image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(masked), norm='ortho'))
    th, tw = target.shape
    top, left = (h_full - th) // 2, (w_full - tw) // 2
    magnitude = np.abs(image[top : top + th, left : left + tw]).astype(np.float32)
    mean = magnitude.mean(dtype=np.float32)
    std = magnitude.std(dtype=np.float32)  # tf.math.reduce_std: population std, no epsilon
    inputs = np.clip((magnitude - mean) / std, -CLIP, CLIP)
    targets = np.clip((np.asarray(target, np.float32) - mean) / std, -CLIP, CLIP)
    return {
        'inputs': torch.from_numpy(inputs),
        'targets': torch.from_numpy(targets),
        'mean': torch.tensor(mean, dtype=torch.float32),
        'std': torch.tensor(std, dtype=torch.float32),
        'volume_max': torch.tensor(volume_max, dtype=torch.float32),
    }


def buffer_shuffle(n: int, buffer_size: int, rng: np.random.Generator) -> np.ndarray:
    """tf.data's shuffle algorithm over ``range(n)``: fill, emit a random slot, refill it."""
    out = np.empty(n, np.int64)
    buf = list(range(min(buffer_size, n)))
    nxt = len(buf)
    for i in range(n):
        j = int(rng.integers(len(buf)))
        out[i] = buf[j]
        if nxt < n:
            buf[j] = nxt
            nxt += 1
        else:
            buf[j] = buf[-1]
            buf.pop()
    return out


class FastMRIDataset(Iterator[dict[str, torch.Tensor]]):
    """Iterator of this rank's batches (CPU float32 tensors); see the module docstring."""

    def __init__(
        self,
        split,
        data_dir,
        data_rng,
        global_batch_size,
        num_batches=None,
        repeat_final_dataset=False,
        rank=0,
        world_size=1,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'fastmri: rank {rank} is not in [0, world_size={world_size})')
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(
                f'fastmri: global_batch_size {global_batch_size} is not a positive '
                f'multiple of world_size {world_size}'
            )
        self.split, self.files = split, split_files(split, data_dir)
        self.data_rng = np.zeros(2, np.int64) if data_rng is None else np.asarray(data_rng)
        self.seed = int(np.asarray(self.data_rng, np.int64).reshape(-1)[0])
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.rank, self.num_batches = rank, num_batches
        self.repeat_final_dataset = repeat_final_dataset
        # (file, slice) of every example in file order: example_index -> location.
        self.examples: list[tuple[int, int]] = []
        for f, path in enumerate(self.files):
            self.examples += [(f, s) for s in range(volume_slices(path))]
        self._open: OrderedDict[int, h5py.File] = OrderedDict()
        self._batches = self._stream()

    def __next__(self) -> dict[str, torch.Tensor]:
        return next(self._batches)

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Example indices of one pass: buffer-shuffled for train/eval_train, else in order."""
        n = len(self.examples)
        if self.split not in ('train', 'eval_train'):
            return np.arange(n)
        buffer = SHUFFLE_BUFFER_BATCHES * self.global_batch_size
        return buffer_shuffle(n, buffer, np.random.default_rng([self.seed, epoch]))

    def _global_batches(self) -> Iterator[np.ndarray]:
        """Example indices of each global batch (the last eval one may be short)."""
        big = self.global_batch_size
        if self.split == 'train':
            if len(self.examples) == 0:
                return
            pending, epoch = np.zeros(0, np.int64), 0
            while True:
                pending = np.concatenate([pending, self.epoch_order(epoch)])
                epoch += 1
                while len(pending) >= big:
                    yield pending[:big]
                    pending = pending[big:]
        order = self.epoch_order(0)
        for start in range(0, len(order), big):
            yield order[start : start + big]

    def _stream(self) -> Iterator[dict[str, torch.Tensor]]:
        cached = []
        for count, indices in enumerate(self._global_batches()):
            if count == self.num_batches:
                break
            lo = self.rank * self.local_batch_size
            batch = self._batch(indices[lo : lo + self.local_batch_size])
            if self.repeat_final_dataset:
                cached.append(batch)
            yield batch
        while cached:  # upstream: take(num_batches).cache().repeat()
            yield from cached

    def _file(self, f: int) -> h5py.File:
        if f in self._open:
            self._open.move_to_end(f)
        else:
            if len(self._open) >= _MAX_OPEN_FILES:
                self._open.popitem(last=False)[1].close()
            self._open[f] = _open_h5(self.files[f])
        return self._open[f]

    def example(self, example_index: int) -> dict[str, torch.Tensor]:
        """The preprocessed example ``example_index`` (its position in file order)."""
        f, s = self.examples[example_index]
        hf = self._file(f)
        kspace = hf['kspace'][s]
        uniform = mask_rng(self.split, self.data_rng, example_index).random(
            kspace.shape[1], dtype=np.float32
        )
        volume_max = float(hf.attrs.get('max', 0.0))
        return process_slice(kspace, hf['reconstruction_esc'][s], volume_max, uniform)

    def _batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        b = self.local_batch_size
        examples = [self.example(int(i)) for i in indices]
        if examples:
            batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
        else:  # a rank whose rows of the last eval batch are all padding
            size = (0, *self.examples_shape())
            batch = {'inputs': torch.zeros(size), 'targets': torch.zeros(size)}
            batch.update({k: torch.zeros(0) for k in ('mean', 'std', 'volume_max')})
        if self.split == 'train':
            return batch
        n = len(examples)
        weights = torch.cat([torch.ones(n), torch.zeros(b - n)])
        if n < b:
            batch = {k: torch.cat([v, v.new_zeros(b - n, *v.shape[1:])]) for k, v in batch.items()}
        batch['weights'] = weights
        return batch

    def examples_shape(self) -> tuple[int, int]:
        with _open_h5(self.files[0]) as hf:
            return tuple(hf['reconstruction_esc'].shape[1:])


def volume_slices(path: str) -> int:
    """The slice count of one h5 volume, after checking its datasets' dtypes and shapes.

    Only the headers are read (about 1 ms a file). Without this check float32 k-space
    would be read as if real (the imaginary part silently zero), and a target larger
    than the k-space or with other slices would fail later, in a batch, naming no file.

    Raises:
        DataError: naming the file and the dataset or attribute that is wrong.
    """
    with _open_h5(path) as hf:
        if 'kspace' not in hf or 'reconstruction_esc' not in hf:
            raise DataError(
                f"fastmri: {path} lacks 'kspace' or 'reconstruction_esc'; expected {LAYOUT}"
            )
        kspace, target = hf['kspace'], hf['reconstruction_esc']
        for name, data in (('kspace', kspace), ('reconstruction_esc', target)):
            if not isinstance(data, h5py.Dataset):
                raise DataError(f'fastmri: {path}: {name!r} is not a dataset; expected {LAYOUT}')
        check_dtype(kspace, 'c', f'fastmri: {path}', "'kspace'", 'complex64 (complex k-space)')
        check_dtype(target, 'f', f'fastmri: {path}', "'reconstruction_esc'", 'float32')
        if kspace.ndim != 3 or target.ndim != 3 or target.shape[1:] != TARGET_SHAPE:
            raise DataError(
                f"fastmri: {path}: 'kspace' {kspace.shape} and 'reconstruction_esc' "
                f'{target.shape}; expected (slices, 640, W) and (slices, 320, 320)'
            )
        if (
            kspace.shape[0] != target.shape[0]
            or kspace.shape[1] < TARGET_SHAPE[0]
            or kspace.shape[2] < TARGET_SHAPE[1]
        ):
            raise DataError(
                f"fastmri: {path}: 'kspace' {kspace.shape} does not match 'reconstruction_esc' "
                f'{target.shape} (the same slices, each at least 320 x 320)'
            )
        volume_max = hf.attrs.get('max', 0.0)
        if np.ndim(volume_max) != 0 or not np.isfinite(_as_float(volume_max)):
            raise DataError(
                f"fastmri: {path}: attribute 'max' is {np.asarray(volume_max).tolist()!r}, "
                'expected a finite number'
            )
        return int(kspace.shape[0])


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float('nan')


def _open_h5(path: str) -> h5py.File:
    """Opens an h5 file read-only; a corrupt or truncated one gets an error that names it.

    h5py's own message ("Unable to synchronously open file (file signature not found)")
    does not say which of a directory's ~1,000 files is bad.
    """
    try:
        return h5py.File(path, 'r')
    except OSError as e:
        raise DataError(
            f'fastmri: {path} is not a readable HDF5 file ({e}); expected {LAYOUT}'
        ) from e


def get_fastmri_dataset(
    split: str,
    data_dir: str,
    data_rng,
    global_batch_size: int,
    num_batches: int | None = None,
    repeat_final_dataset: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> FastMRIDataset:
    """This rank's batches of ``split``: dicts of CPU float32 tensors.

    Args:
        split: 'train', 'eval_train', 'validation' or 'test'.
        data_dir: Directory holding ``knee_singlecoil_train/`` and ``knee_singlecoil_val/``.
        data_rng: Upstream's RandomState (two uint32): both words key the train/eval_train
            masks, the first seeds the shuffle.
        global_batch_size: Slices per global batch; a multiple of ``world_size``.
        num_batches: Stop after this many batches (None: train forever, eval one pass).
        repeat_final_dataset: Replay the batches (cached) forever.
        rank, world_size: This process's shard: rows ``[rank*b, (rank+1)*b)`` of each
            global batch, ``b = global_batch_size // world_size``.

    Raises:
        FileNotFoundError: A directory is missing or holds no h5 file of the split.
        ValueError: Bad split, rank or batch size.
        DataError (a ValueError): an h5 file that is unreadable, lacks a dataset,
            or has a wrong dtype or shape (`volume_slices`).
    """
    return FastMRIDataset(
        split,
        data_dir,
        data_rng,
        global_batch_size,
        num_batches,
        repeat_final_dataset,
        rank,
        world_size,
    )
