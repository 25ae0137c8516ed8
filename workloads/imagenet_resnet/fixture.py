"""A tiny ImageNet in the real folder layouts (JPEG files), for tests and benchmarks.

``<root>/train/<wnid>/<wnid>_<i>.JPEG``, ``<root>/val/<wnid>/...`` (ImageFolder layout,
as upstream's PyTorch side reads it) and, optionally, ``<root>/v2/<class index>/<i>.jpeg``
(ImageNet-v2 matched-frequency as published). Images are smooth random colour fields
(JPEG-compressible like photos, unlike noise) of varying sizes; a few are greyscale to
exercise ImageFolder's RGB conversion. Deterministic in ``seed``.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

WNIDS = ('n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475')


def jpeg_image(
    rng: np.random.Generator, width: int, height: int, grey: bool = False
) -> Image.Image:
    """A smooth random image: a coarse colour grid bilinearly upsampled."""
    coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    return img.convert('L') if grey else img


def write_imagenet_fixture(
    root: str,
    seed: int = 0,
    num_classes: int = 3,
    train_per_class: int = 8,
    val_per_class: int = 3,
    v2_per_class: int = 0,
    size_range: tuple[int, int] = (160, 420),
    fixed_size: tuple[int, int] | None = None,
) -> None:
    """Writes the split folders under `root`.

    Args:
      root: Created if missing.
      seed: Seeds sizes and pixels.
      num_classes: Classes (wnids from `WNIDS`, then synthetic ones).
      train_per_class, val_per_class, v2_per_class: Images per class and split (v2: 0 = none).
      size_range: Width and height drawn uniformly from this range...
      fixed_size: ...unless given, e.g. (500, 375) for ImageNet-typical JPEGs.
    """
    rng = np.random.default_rng(seed)
    wnids = list(WNIDS[:num_classes]) + [
        f'n{90000000 + i:08d}' for i in range(num_classes - len(WNIDS))
    ]
    counts = {'train': train_per_class, 'val': val_per_class, 'v2': v2_per_class}
    for split, per_class in counts.items():
        for c, wnid in enumerate(wnids[: num_classes if per_class else 0]):
            folder = os.path.join(root, split, str(c) if split == 'v2' else wnid)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                w, h = fixed_size or (
                    int(rng.integers(*size_range)),
                    int(rng.integers(*size_range)),
                )
                img = jpeg_image(rng, w, h, grey=(i == 1 and c == 0))
                name = f'{i}.jpeg' if split == 'v2' else f'{wnid}_{i}.JPEG'
                img.save(os.path.join(folder, name), quality=90)
