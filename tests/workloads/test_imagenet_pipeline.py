"""ImageNet input pipelines on a generated JPEG folder: DALI against the PIL reference.

Checked: ImageFolder's labelling, ImageNet-v2's integer folders, shapes/dtypes/ranges,
labels following the sample plan, determinism per seed, eval order and padding, the
DALI eval path against PIL within decoder/filter differences, and the train
augmentation's statistics (crop area and aspect distributions, flip rate) against the
reference's sampler with two-sample KS tests.
"""

import itertools

import numpy as np
import pytest
import torch

from workloads.imagenet_resnet import input_pipeline as ip
from workloads.imagenet_resnet import loaders, transforms
from workloads.imagenet_resnet.fixture import write_imagenet_fixture

dali = pytest.mark.skipif(not loaders.dali_available(), reason='nvidia-dali not installed')
# Normalised values of pixel 0 and 255 over the three channels.
LOW = min(-m / s for m, s in zip(transforms.MEAN_RGB, transforms.STDDEV_RGB))
HIGH = max((255 - m) / s for m, s in zip(transforms.MEAN_RGB, transforms.STDDEV_RGB))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet')
    write_imagenet_fixture(
        str(root), seed=1, num_classes=3, train_per_class=8, val_per_class=3, v2_per_class=2
    )
    return str(root)


def test_folders_label_like_imagefolder_and_imagenet_v2(data_dir, tmp_path):
    train = ip.split_images('train', data_dir)
    assert len(train) == 24 and train.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert all(p.split('/')[-2] == ip.os.path.basename(ip.os.path.dirname(p)) for p in train.paths)
    assert sorted(train.paths) == list(train.paths)  # Sorted classes, sorted files.
    v2 = ip.split_images('test', data_dir, imagenet_v2_data_dir=f'{data_dir}/v2')
    assert v2.labels.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ip.split_images('validation', str(tmp_path))
    (tmp_path / 'v2' / 'n0123').mkdir(parents=True)
    with pytest.raises(ValueError, match="'n0123' is not an integer label"):
        ip.split_images('test', '', imagenet_v2_data_dir=str(tmp_path / 'v2'))


def test_plans_shard_global_batches_and_pad_the_last_eval_batch():
    whole = list(itertools.islice(ip.train_plan(20, 4, 8, 0, 1), 4))
    ranks = [list(itertools.islice(ip.train_plan(20, 4, 8, r, 2), 4)) for r in range(2)]
    for k in range(4):
        np.testing.assert_array_equal(np.concatenate([ranks[0][k][1], ranks[1][k][1]]), whole[k][1])
    assert [e for e, _ in whole] == [0, 0, 1, 1]  # 20 // 8 = 2 full batches per epoch.
    order = ip.eval_order('validation', 10, 0, 10)
    plan = [ip.eval_plan(order, 8, r, 2) for r in range(2)]
    assert [real for _, real in plan[0]] == [4, 2] and [real for _, real in plan[1]] == [4, 0]
    assert all(len(idx) == 4 for p in plan for idx, _ in p)
    import random

    expected = list(range(100))
    random.Random(3).shuffle(expected)
    assert ip.eval_order('eval_train', 100, 3, 7).tolist() == expected[:7]


def _train(backend, images, seed, batches=3, batch=8):
    plan = itertools.islice(ip.train_plan(len(images), seed, batch, 0, 1), batches)
    if backend == 'dali':
        return list(loaders.dali_batches(images, plan, batch, True, seed))
    return list(loaders.pil_batches(images, plan, True, seed, num_workers=0))


@pytest.mark.parametrize('backend', [pytest.param('dali', marks=dali), 'pil'])
def test_train_batches_shapes_labels_and_determinism(data_dir, backend):
    images = ip.split_images('train', data_dir)
    batches = _train(backend, images, seed=5)
    plan = list(itertools.islice(ip.train_plan(len(images), 5, 8, 0, 1), 3))
    for (x, y), (_, indices) in zip(batches, plan):
        assert x.shape == (8, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert LOW - 1e-4 <= float(x.min()) and float(x.max()) <= HIGH + 1e-4
        assert y.tolist() == images.labels[indices].tolist()
    again = _train(backend, images, seed=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    other = _train(backend, images, seed=6)
    assert not torch.equal(batches[0][0], other[0][0])


@dali
def test_dali_eval_matches_pil_eval_in_fixed_order(data_dir):
    images = ip.split_images('validation', data_dir)
    plan = ip.eval_plan(ip.eval_order('validation', len(images), 0, len(images)), 4, 0, 1)
    ours = list(loaders.dali_batches(images, iter([(0, i) for i, _ in plan]), 4, False, 0))
    ref = list(
        loaders.pil_batches(images, iter([(0, i) for i, _ in plan]), False, 0, num_workers=0)
    )
    assert [y.tolist() for _, y in ours] == [images.labels[i].tolist() for i, _ in plan]
    for (a, _), (b, _) in zip(ours, ref):
        # Different JPEG decoders (chroma upsampling, IDCT) and resize filters: about one
        # grey level on average (1/58 in normalised units), a few levels at edges.
        assert float((a - b).abs().mean()) < 0.05
        assert float((a - b).abs().max()) < 0.6


@dali
def test_dali_crop_and_flip_statistics_match_the_reference_sampler(tmp_path):
    from nvidia.dali import types  # noqa: F401
    from scipy import stats

    write_imagenet_fixture(str(tmp_path), seed=2, num_classes=2, train_per_class=16, val_per_class=0,
                           fixed_size=(500, 375))  # fmt: skip
    images = ip.split_images('train', str(tmp_path))
    batches, batch = 40, 32
    plan = itertools.islice(ip.train_plan(len(images), 0, batch, 0, 1), batches)
    source = loaders._EncodedSource(images, plan)
    pipe = loaders.build_dali_pipeline(source, batch, True, seed=9, debug_outputs=True)
    pipe.build()
    shapes, flips = [], []
    for _ in range(batches):
        _, _, crop, flip = pipe.run()
        shapes += [np.asarray(t) for t in crop]
        flips += [int(np.asarray(t)) for t in flip]
    h, w = np.array(shapes)[:, 0], np.array(shapes)[:, 1]
    rng = np.random.default_rng(0)
    ref = np.array([transforms.random_resized_crop_box(500, 375, rng)[2:] for _ in range(len(h))])
    n = len(h)
    area = stats.ks_2samp(h * w / (500 * 375), ref[:, 0] * ref[:, 1] / (500 * 375))
    aspect = stats.ks_2samp(np.log(w / h), np.log(ref[:, 1] / ref[:, 0]))
    assert area.pvalue > 1e-3 and aspect.pvalue > 1e-3, (area, aspect)
    # Flip rate 0.5 within 4 standard errors (sd 0.5 / sqrt(1280) = 0.014).
    assert abs(np.mean(flips) - 0.5) < 4 * 0.5 / np.sqrt(n)


# ---- queues --------------------------------------------------------------------------------------
def test_mixup_is_upstreams_convex_mix_with_the_previous_example():
    from workloads.imagenet_resnet.queues import mixup

    x = torch.randn(4, 3, 2, 2)
    y = torch.tensor([1, 2, 3, 4])
    mixed, soft = mixup(x, y, 0.3, num_classes=6)
    torch.testing.assert_close(mixed[1], 0.3 * x[1] + 0.7 * x[0])
    torch.testing.assert_close(mixed[0], 0.3 * x[0] + 0.7 * x[3])  # roll(1, 0) wraps around.
    assert soft.shape == (4, 6) and torch.allclose(soft.sum(1), torch.ones(4))
    assert soft[1, 2] == pytest.approx(0.3) and soft[1, 1] == pytest.approx(0.7)


@pytest.mark.parametrize('backend', [pytest.param('dali', marks=dali), 'pil'])
def test_eval_queue_pads_with_weights_and_repeats_the_same_pass(data_dir, backend):
    from workloads.imagenet_resnet.queues import imagenet_queue

    # 9 validation images, global batch 4 over 2 ranks: 3 batches per pass of 2 per rank.
    queues = [imagenet_queue('validation', data_dir, 0, 4, rank=r, world_size=2, backend=backend,
                             num_workers=0) for r in range(2)]  # fmt: skip
    passes = [[next(q) for _ in range(6)] for q in queues]
    weights = [[b['weights'].tolist() for b in p[:3]] for p in passes]
    assert weights == [[[1, 1], [1, 1], [1, 0]], [[1, 1], [1, 1], [0, 0]]]
    labels = torch.cat(
        [torch.cat([passes[0][k]['targets'], passes[1][k]['targets']]) for k in range(3)]
    )
    assert labels[:9].tolist() == ip.split_images('validation', data_dir).labels.tolist()
    for p in passes:  # The second pass is the first again (deterministic eval transforms).
        assert all(torch.equal(a['inputs'], b['inputs']) for a, b in zip(p[:3], p[3:]))


def test_train_queue_with_mixup_gives_soft_targets(data_dir):
    from workloads.imagenet_resnet.queues import imagenet_queue, resolve_backend

    batch = next(
        imagenet_queue('train', data_dir, 0, 4, backend='pil', num_workers=0, use_mixup=True)
    )
    assert batch['targets'].shape == (4, 1000) and torch.allclose(
        batch['targets'].sum(1), torch.ones(4)
    )
    with pytest.raises(ValueError, match="backend 'gpu'"):
        resolve_backend('gpu')
