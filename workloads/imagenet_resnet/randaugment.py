"""Upstream's RandAugment for ViT: 2 ops from 16, each at a fixed magnitude, on PIL and in DALI.

Upstream (`imagenet_pytorch/randaugment.py`, spec §6.4) applies, after the crop and flip,
``num_ops=2`` operations drawn uniformly (with replacement) from `OPS` at the magnitudes
listed there; a signed op's magnitude is negated with probability 1/2; geometric ops
use nearest-neighbour sampling and fill 128. Quirks kept: Solarize's threshold is 256, so
it changes nothing (`np.where(img < 256, img, 255 - img)`); Cutout's 40 is doubled to an
80 x 80 grey box whose corner is ``max(0, uniform(size) - 40)``; ShearX/Y shear about the
top-left corner (``center=[0, 0]``) by ``atan(0.3)``.

`pil_randaugment` is the reference: torchvision's PIL backend written out (affine and
rotate through PIL's inverse-mapped `transform`/`rotate`, enhancements through
`ImageEnhance`, the rest through `ImageOps`). `dali_randaugment` builds the same suite
from DALI's `auto_aug` operations pinned to these magnitudes. Known differences of the
DALI suite, all inside single ops: Color scales HSV saturation (PIL blends with the luma
image), Equalize uses OpenCV's lookup-table formula, Sharpness also filters the 1-pixel
border that PIL leaves alone.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

# Upstream's ops_space(): name -> (magnitude, signed).
OPS = {
    'ShearX': (0.3, True),
    'ShearY': (0.3, True),
    'TranslateX': (100, True),
    'TranslateY': (100, True),
    'Rotate': (30, True),
    'Brightness': (1.9, False),
    'Color': (1.9, False),
    'Contrast': (1.9, False),
    'Sharpness': (1.9, False),
    'Posterize': (4, False),
    'Solarize': (256, False),
    'SolarizeAdd': (110, False),
    'AutoContrast': (0.0, False),
    'Equalize': (0.0, False),
    'Invert': (0.0, False),
    'Cutout': (40.0, False),
}
NUM_OPS = 2
FILL = 128


def _inverse_affine(center, angle, translate, shear) -> list[float]:
    """torchvision's `_get_inverse_affine_matrix` (scale 1): output pixel -> input pixel."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty) + cx
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty) + cy
    return m


def _affine(img, center=None, angle=0.0, translate=(0, 0), shear=(0.0, 0.0)):
    if center is None:
        center = (img.width * 0.5, img.height * 0.5)
    matrix = _inverse_affine(center, angle, translate, shear)
    fill = (FILL,) * len(img.getbands())
    return img.transform(img.size, Image.AFFINE, matrix, Image.NEAREST, fillcolor=fill)


def _cutout(img, pad_size: int, rng: np.random.Generator):
    x0, y0 = rng.uniform(0, img.width), rng.uniform(0, img.height)
    pad = pad_size * 2  # Upstream doubles it "to match Jax".
    x0, y0 = int(max(0, x0 - pad / 2)), int(max(0, y0 - pad / 2))
    x1, y1 = int(min(img.width, x0 + pad)), int(min(img.height, y0 + pad))
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), (FILL, FILL, FILL))
    return img


def apply_op(
    img: Image.Image, name: str, magnitude: float, rng: np.random.Generator
) -> Image.Image:
    """One upstream operation on an RGB PIL image."""
    if name == 'ShearX':
        return _affine(img, center=(0, 0), shear=(math.degrees(math.atan(magnitude)), 0.0))
    if name == 'ShearY':
        return _affine(img, center=(0, 0), shear=(0.0, math.degrees(math.atan(magnitude))))
    if name == 'TranslateX':
        return _affine(img, translate=(int(magnitude), 0))
    if name == 'TranslateY':
        return _affine(img, translate=(0, int(magnitude)))
    if name == 'Rotate':
        return img.rotate(magnitude, Image.NEAREST, expand=False, fillcolor=(FILL,) * 3)
    enhancers = {'Brightness': ImageEnhance.Brightness, 'Color': ImageEnhance.Color,
                 'Contrast': ImageEnhance.Contrast, 'Sharpness': ImageEnhance.Sharpness}  # fmt: skip
    if name in enhancers:
        return enhancers[name](img).enhance(magnitude)
    if name == 'Posterize':
        return ImageOps.posterize(img, int(magnitude))
    if name == 'Solarize':
        array = np.asarray(img)
        return Image.fromarray(np.where(array < magnitude, array, 255.0 - array).astype(np.uint8))
    if name == 'SolarizeAdd':
        array = np.asarray(img)
        added = np.clip(array.astype(np.int64) + int(magnitude), 0, 255).astype(np.uint8)
        return Image.fromarray(np.where(array < 128, added, array))
    if name == 'AutoContrast':
        return ImageOps.autocontrast(img)
    if name == 'Equalize':
        return ImageOps.equalize(img)
    if name == 'Invert':
        return ImageOps.invert(img)
    if name == 'Cutout':
        return _cutout(img, int(magnitude), rng)
    raise ValueError(f'unknown RandAugment op {name!r}')


def pil_randaugment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Upstream's `RandAugment()(img)` with its draws from `rng`."""
    names = list(OPS)
    for _ in range(NUM_OPS):
        name = names[int(rng.integers(len(names)))]
        magnitude, signed = OPS[name]
        if signed and rng.integers(2):
            magnitude = -magnitude
        img = apply_op(img, name, float(magnitude), rng)
    return img


def dali_suite() -> list:
    """DALI augmentations in `OPS` order, each pinned to upstream's magnitude at its top bin."""
    from nvidia.dali import fn
    from nvidia.dali import math as dmath
    from nvidia.dali.auto_aug import augmentations as aa
    from nvidia.dali.auto_aug.core import augmentation

    @augmentation(name='Solarize')
    def solarize_256(data, _):
        return data  # Threshold 256: no uint8 value reaches it.

    @augmentation(name='Cutout')
    def cutout(data, _, shape):
        corner = fn.random.uniform(range=[0.0, 1.0], shape=[2]) * shape[:2] - 40.0
        return fn.erase(data, anchor=dmath.max(corner, 0.0), shape=[80.0, 80.0], axis_names='HW',
                        fill_value=float(FILL))  # fmt: skip

    fixed = {'randomly_negate': False}
    return [
        aa.shear_x, aa.shear_y,
        aa.translate_x_no_shape.augmentation(mag_range=(0, 100)),
        aa.translate_y_no_shape.augmentation(mag_range=(0, 100)),
        aa.rotate,
        aa.brightness.augmentation(**fixed), aa.color.augmentation(**fixed),
        aa.contrast.augmentation(**fixed), aa.sharpness.augmentation(**fixed),
        aa.posterize, solarize_256, aa.solarize_add, aa.auto_contrast, aa.equalize, aa.invert, cutout,
    ]  # fmt: skip


TOP_BIN, NUM_BINS = 1, 2  # Every range's top is upstream's magnitude: always the top bin.


def dali_randaugment(images, seed: int):
    """The suite in a DALI graph: `images` are uint8 HWC (after the crop and flip)."""
    from nvidia.dali import types
    from nvidia.dali.auto_aug import rand_augment

    return rand_augment.apply_rand_augment(
        dali_suite(), images, n=NUM_OPS, m=TOP_BIN, num_magnitude_bins=NUM_BINS, seed=seed,
        fill_value=FILL, interp_type=types.INTERP_NN, shape=images.shape(),
    )  # fmt: skip
