"""The two ImageNet loaders over one sample plan: DALI (fast path) and DataLoader + PIL.

Both take an iterator of (epoch, sample indices) batches from `input_pipeline` and yield
``(inputs float32 [b, 3, 224, 224], targets int64 [b])`` CPU tensors (DALI on a GPU:
device tensors), so the choice of backend changes speed, not which images are read.

DALI decodes with the ROI-aware random-crop decoder (``decoders.image_random_crop``: only
the crop window's blocks are fully decoded; ``mixed`` = nvJPEG on a GPU) and resizes with
antialiased linear interpolation; the PIL path crops and resizes the whole decoded image.
Their crop windows follow the same distribution (area ~ U(0.08, 1), log aspect uniform in
[3/4, 4/3], 10 tries then a centre fallback), but not the same draws, and their resampling
filters differ in the last bits, so batches are equal in distribution, not in value.

An image either backend cannot read or decode ends the stream with a `DataError`
naming the file (PIL: from the worker, intact; DALI: found among the batches in flight).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from algoperf.errors import DataError
from workloads.imagenet_resnet import randaugment, transforms
from workloads.imagenet_resnet.input_pipeline import ImageList

_DALI_PREFETCH = 2  # DALI's prefetch_queue_depth: batches decoded ahead of the consumer.


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


# ---- reference: torch DataLoader + PIL ---------------------------------------------------------
# Errors PIL raises for a file that is not a decodable image (truncated, corrupt, not an
# image, or past PIL's decompression-bomb limit); anything else is a bug and propagates.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass(frozen=True)
class _DecodeFailure:
    """Stands in for a batch whose image could not be decoded; raised in the main process.

    An exception raised in a DataLoader worker reaches the main process as a new exception
    whose message is the worker's whole traceback, so the one line naming the file would
    be buried; a returned value keeps it intact.
    """

    message: str


def _decode_rgb(path: str) -> Image.Image:
    with Image.open(path) as f:
        return f.convert('RGB')  # ImageFolder's loader: grey and CMYK JPEGs become RGB.


class _PilSamples(torch.utils.data.Dataset):
    """Item (epoch, index) -> (normalised CHW image, label); its randomness is keyed by both."""

    def __init__(self, images: ImageList, train: bool, seed: int, randaugment=None):
        self.images, self.train, self.seed, self.randaugment = images, train, seed, randaugment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        path = self.images.paths[index]
        try:
            img = _decode_rgb(path)
        except _DECODE_ERRORS as e:
            return _DecodeFailure(f'{path}: cannot decode image ({type(e).__name__}: {e})')
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            img = transforms.train_image(img, rng, self.randaugment)
        else:
            img = transforms.eval_image(img)
        return transforms.to_normalized_chw(img), int(self.images.labels[index])


def _collate(samples):
    """default_collate, unless a sample failed to decode: then that failure is the batch."""
    for sample in samples:
        if isinstance(sample, _DecodeFailure):
            return sample
    return torch.utils.data.default_collate(samples)


def first_undecodable(paths) -> str | None:
    """The message naming the first of `paths` PIL cannot decode, or None if all decode."""
    for path in paths:
        try:
            _decode_rgb(path)
        except _DECODE_ERRORS as e:
            return f'{path}: cannot decode image ({type(e).__name__}: {e})'
    return None


def pil_batches(
    images: ImageList,
    plan: Iterator[tuple[int, np.ndarray]],
    train: bool,
    seed: int,
    num_workers: int = 4,
    pin_memory: bool = False,
    use_randaug: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The reference loader: a DataLoader whose batch sampler is the plan."""
    batch_sampler = ([(epoch, int(i)) for i in indices] for epoch, indices in plan)
    augment = randaugment.pil_randaugment if use_randaug else None
    loader = torch.utils.data.DataLoader(
        _PilSamples(images, train, seed, augment),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
        collate_fn=_collate,
    )
    for batch in loader:
        if isinstance(batch, _DecodeFailure):
            raise DataError(batch.message)
        yield batch


# ---- fast path: DALI ---------------------------------------------------------------------------
class _EncodedSource:
    """DALI external source: the plan's files as raw bytes (decoding happens in DALI).

    Keeps the paths of the last few batches it handed out: DALI runs up to
    `prefetch_queue_depth` (2) batches ahead and its decode errors name no file, so on an
    error these are the candidates (`dali_batches` finds the bad one with PIL). A read
    error is kept in `failure` because DALI re-raises callback errors as its own.
    """

    def __init__(self, images: ImageList, plan: Iterator[tuple[int, np.ndarray]]):
        self.images, self.plan = images, plan
        self.recent: collections.deque[list[str]] = collections.deque(maxlen=_DALI_PREFETCH + 2)
        self.failure: Exception | None = None

    def __call__(self, info=None):
        _, indices = next(self.plan)  # StopIteration ends the DALI epoch.
        files, labels, paths = [], [], []
        for i in indices:
            path = self.images.paths[int(i)]
            try:
                files.append(np.fromfile(path, dtype=np.uint8))
            except OSError as e:
                self.failure = DataError(f'{path}: cannot read image ({e.strerror or e})')
                raise self.failure from e
            paths.append(path)
            labels.append(np.array(self.images.labels[int(i)], dtype=np.int64))
        self.recent.append(paths)
        return files, labels


def build_dali_pipeline(
    source, batch_size: int, train: bool, seed: int, num_threads: int = 2, device_id: int | None = None,
    use_randaug: bool = False, debug_outputs: bool = False,
):  # fmt: skip
    """The DALI pipeline: train = random-crop decode, resize 224, flip, [RandAugment,] normalise.

    Eval = decode, resize the shorter side to 256, centre crop 224, normalise. With
    ``device_id`` set, decoding is "mixed" (nvJPEG) and the rest runs on that GPU.
    ``debug_outputs`` (train) adds each crop's shape before the resize and the flip flags,
    for the augmentation-statistics tests.
    """
    from nvidia.dali import fn, pipeline_def, types

    decoder_device = 'cpu' if device_id is None else 'mixed'
    mean = [m for m in transforms.MEAN_RGB]
    std = [s for s in transforms.STDDEV_RGB]

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                  prefetch_queue_depth=_DALI_PREFETCH, exec_dynamic=True, enable_conditionals=True)  # fmt: skip
    def pipeline():
        jpegs, labels = fn.external_source(
            source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64]
        )
        if train:
            images = fn.decoders.image_random_crop(
                jpegs, device=decoder_device, output_type=types.RGB,
                random_area=list(transforms.SCALE_RANGE), random_aspect_ratio=list(transforms.RATIO_RANGE),
                num_attempts=10,
            )  # fmt: skip
            crop_shape = images.shape()
            size = transforms.CROP_SIZE
            images = fn.resize(
                images,
                resize_x=size,
                resize_y=size,
                interp_type=types.INTERP_LINEAR,
                antialias=True,
            )
            flip = fn.random.coin_flip(probability=0.5)
            images = fn.flip(images, horizontal=flip)
            if use_randaug:  # After the flip, on uint8 HWC, as upstream's PIL transform order.
                images = randaugment.dali_randaugment(images, seed=seed + 1)
            out = fn.crop_mirror_normalize(
                images, dtype=types.FLOAT, output_layout='CHW', mean=mean, std=std
            )
            if debug_outputs:
                return out, labels.gpu() if device_id is not None else labels, crop_shape, flip
        else:
            images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=transforms.RESIZE_SIZE, interp_type=types.INTERP_LINEAR,
                               antialias=True)  # fmt: skip
            out = fn.crop_mirror_normalize(
                images, dtype=types.FLOAT, output_layout='CHW', mean=mean, std=std,
                crop=(transforms.CROP_SIZE, transforms.CROP_SIZE), crop_pos_x=0.5, crop_pos_y=0.5,
            )  # fmt: skip
        return out, labels.gpu() if device_id is not None else labels

    return pipeline()


def _to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    """A torch copy of a DALI batch (DALI reuses its output buffers for later batches)."""
    dense = tensor_list.as_tensor()
    if device.type != 'cuda':
        # numpy's copy: 7 ms for a 64 x 3 x 224 x 224 float batch here, against 34 ms for
        # `feed_ndarray` into a fresh `torch.empty` (page faults on the new 38 MB).
        return torch.from_numpy(np.array(dense))
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=device)
    feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
    return out


def dali_batches(
    images: ImageList,
    plan: Iterator[tuple[int, np.ndarray]],
    batch_size: int,
    train: bool,
    seed: int,
    num_threads: int = 2,
    device: torch.device | None = None,
    use_randaug: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fast path; ends when the plan does."""
    device = device or torch.device('cpu')
    device_id = (device.index or 0) if device.type == 'cuda' else None
    source = _EncodedSource(images, plan)
    pipe = build_dali_pipeline(source, batch_size, train, seed, num_threads, device_id, use_randaug)
    pipe.build()
    while True:
        try:
            inputs, labels = pipe.run()
        except StopIteration:
            return
        except Exception as e:
            named = _named_dali_error(source, e)
            if named is e:
                raise
            raise named from e
        yield _to_torch(inputs, device), _to_torch(labels, device).reshape(-1)


def _named_dali_error(source: _EncodedSource, error: Exception) -> Exception:
    """The error to raise for a failed DALI batch: one naming the file where one is to blame.

    DALI says which operator failed ("Error in thread 0: nvJPEG ..."), not which image:
    the source's recent files are decoded with PIL and the first that fails is named. If
    they all decode (DALI failed for another reason, e.g. memory), DALI's error stands.
    """
    if source.failure is not None:
        return source.failure
    if not isinstance(error, RuntimeError):
        return error
    message = first_undecodable(path for batch in source.recent for path in batch)
    if message is None:
        return error
    dali_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return DataError(f'{message}; DALI: {dali_line[:200]}')
