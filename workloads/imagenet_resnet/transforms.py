"""ImageNet's PIL transforms as upstream composes them from torchvision, without torchvision.

Upstream's PyTorch pipeline (spec §6.3) is torchvision's `RandomResizedCrop(224, scale=(0.08,
1), ratio=(3/4, 4/3))`, `RandomHorizontalFlip()`, [RandAugment for ViT], `ToTensor()`,
`Normalize(mean, std)` for training and `Resize(256)`, `CenterCrop(224)`, `ToTensor()`,
`Normalize` for eval, on PIL images. The same arithmetic is written out here (torchvision's
PIL backend is PIL's own `crop` and bilinear `resize`, so results match it bit for bit
given the same crop window and flip), with the randomness drawn from a numpy Generator
so that a sample's augmentation is a function of (seed, epoch, index) in any worker.
This is the reference (and the fallback) of the DALI pipeline.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # Upstream's train_mean.
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)  # Upstream's train_stddev.
CROP_SIZE = 224
RESIZE_SIZE = 256
SCALE_RANGE = (0.08, 1.0)
RATIO_RANGE = (3 / 4, 4 / 3)


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator, scale=SCALE_RANGE, ratio=RATIO_RANGE
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's `RandomResizedCrop.get_params`.

    Ten tries of area ~ U(scale) * image area and aspect ratio log-uniform in `ratio`;
    then the whole image clamped to the ratio range, centred.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_image(img: Image.Image, rng: np.random.Generator, randaugment=None) -> Image.Image:
    """RandomResizedCrop(224) + horizontal flip (p 0.5) [+ RandAugment], as PIL."""
    top, left, h, w = random_resized_crop_box(img.width, img.height, rng)
    img = img.crop((left, top, left + w, top + h)).resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if randaugment is not None:
        img = randaugment(img, rng)
    return img


def eval_image(img: Image.Image) -> Image.Image:
    """Resize(256) (shorter side; longer side truncated as torchvision) + CenterCrop(224)."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != RESIZE_SIZE:
        new_long = int(RESIZE_SIZE * long / short)
        size = (RESIZE_SIZE, new_long) if w <= h else (new_long, RESIZE_SIZE)
        img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    top = round((h - CROP_SIZE) / 2.0)
    left = round((w - CROP_SIZE) / 2.0)
    return img.crop((left, top, left + CROP_SIZE, top + CROP_SIZE))


def to_normalized_chw(img: Image.Image) -> torch.Tensor:
    """ToTensor() + Normalize(mean/255, std/255): float32 [3, H, W]."""
    array = np.asarray(img.convert('RGB'), dtype=np.float32)
    array = (array - np.array(MEAN_RGB, np.float32)) / np.array(STDDEV_RGB, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
