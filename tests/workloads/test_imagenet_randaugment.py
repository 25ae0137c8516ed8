"""Upstream's RandAugment: the PIL reference's ops, and each DALI op against it.

Reference checks are against closed forms (translation moves pixels by exactly 100,
posterize keeps 4 bits, solarize(256) is the identity, cutout paints an 80 x 80 box
grey...). DALI's ops are compared with the reference op by op on one image; geometric
ops may use the opposite sign convention (their sign is random anyway), so the closer
of +magnitude and -magnitude counts.
"""

import numpy as np
import pytest
from PIL import Image

from workloads.imagenet_resnet import loaders, randaugment
from workloads.imagenet_resnet.fixture import jpeg_image

dali = pytest.mark.skipif(not loaders.dali_available(), reason='nvidia-dali not installed')


@pytest.fixture(scope='module')
def image():
    # Smooth colours plus pixel noise, squeezed into [40, 200]: edges for Sharpness, range
    # left for AutoContrast/Equalize, values on both sides of 128 for the solarize ops.
    rng = np.random.default_rng(0)
    smooth = np.asarray(jpeg_image(rng, 224, 224), dtype=np.float64)
    noisy = 40 + 0.55 * smooth + rng.uniform(0, 20, smooth.shape)
    return Image.fromarray(noisy.astype(np.uint8))


def _op(img, name, sign=1.0):
    magnitude, _ = randaugment.OPS[name]
    return np.asarray(randaugment.apply_op(img, name, sign * magnitude, np.random.default_rng(1)))


def test_reference_ops_closed_forms(image):
    x = np.asarray(image).astype(int)
    moved = _op(image, 'TranslateX')
    np.testing.assert_array_equal(moved[:, 100:], x[:, :-100])
    assert (moved[:, :100] == 128).all()
    np.testing.assert_array_equal(_op(image, 'Posterize'), x & 0xF0)
    np.testing.assert_array_equal(_op(image, 'Solarize'), x)  # Threshold 256: a no-op, as upstream.
    np.testing.assert_array_equal(
        _op(image, 'SolarizeAdd'), np.where(x < 128, np.minimum(x + 110, 255), x)
    )
    np.testing.assert_array_equal(_op(image, 'Invert'), 255 - x)
    # PIL's blend with black in fixed point: x * 1.9 within one grey level.
    assert np.abs(_op(image, 'Brightness') - np.minimum(x * 1.9, 255)).max() <= 1
    sheared = _op(image, 'ShearX')
    np.testing.assert_array_equal(sheared[0], x[0])  # Shear about the top-left corner: row 0 stays.
    grey = (_op(image, 'Cutout') == 128).all(axis=2)
    assert 80 * 40 <= grey.sum() <= 81 * 81  # An 80 x 80 box (clipped at most to half by an edge).
    assert len(set(randaugment.OPS)) == 16 and randaugment.NUM_OPS == 2


def test_reference_draws_two_ops_with_random_signs(image):
    outs = {
        np.asarray(randaugment.pil_randaugment(image, np.random.default_rng(s))).tobytes()
        for s in range(20)
    }
    assert len(outs) > 15  # Different ops/signs per seed; same seed, same image:
    a = randaugment.pil_randaugment(image, np.random.default_rng(3))
    assert np.array_equal(
        np.asarray(a), np.asarray(randaugment.pil_randaugment(image, np.random.default_rng(3)))
    )


def _dali_op(aug, img):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, seed=0)
    def pipe():
        data = fn.external_source(source=lambda: [np.asarray(img)], batch=True, layout='HWC')
        return aug(data, magnitude_bin=randaugment.TOP_BIN, num_magnitude_bins=randaugment.NUM_BINS,
                   fill_value=randaugment.FILL, interp_type=types.INTERP_NN, shape=data.shape())  # fmt: skip

    p = pipe()
    p.build()
    return np.asarray(p.run()[0][0])


# Mean absolute difference allowed per op (grey levels of 255). Measured: 0 for the
# geometric ops (same nearest-neighbour sampling) and the bit ops, 0.2-0.8 where formulas
# differ in rounding or slightly (HSV saturation vs PIL's luma blend, OpenCV's vs PIL's
# equalize table: 1.9, PIL's unfiltered sharpness border); each op moves the image by 3-96.
TOLERANCE = {'Equalize': 2.5}


@dali
@pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore:The augmentation')
@pytest.mark.parametrize('index', range(16))
def test_dali_op_matches_the_reference_op(image, index):
    name = list(randaugment.OPS)[index]
    ours = _dali_op(randaugment.dali_suite()[index], image).astype(int)
    if name == 'Cutout':  # Random position: compare the painted area instead.
        grey = (ours == 128).all(axis=2) & ~(np.asarray(image) == 128).all(axis=2)
        assert 80 * 40 <= grey.sum() <= 81 * 81
        return
    signs = (1.0, -1.0) if randaugment.OPS[name][1] else (1.0,)
    diffs = [np.abs(ours - _op(image, name, sign).astype(int)).mean() for sign in signs]
    assert min(diffs) <= TOLERANCE.get(name, 1.0), (name, diffs)
    if name != 'Solarize':  # The others must change the image far more than the two differ.
        assert np.abs(ours - np.asarray(image).astype(int)).mean() > 4 * min(diffs), name
