"""ImageNet training pipeline throughput: DALI vs the torch DataLoader + PIL reference (images/s).

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/workloads/bench_imagenet_pipeline.py \
        --benchmark-json=benchmarks/results/imagenet_pipeline_<hw>_<yyyymmdd>.json

Input: 512 generated 500 x 375 JPEGs (quality 90, ImageNet's typical size) in the train
folder layout, read from the page cache. One round = 8 batches of 64 through the
training transforms (decode, RandomResizedCrop 224 with scale 0.08-1 and ratio 3/4-4/3,
horizontal flip, normalise to float32 NCHW), on all of this machine's cores:
    dali: `loaders.dali_batches` (CPU: ROI random-crop decode, one thread per core).
    pil (peer): `loaders.pil_batches`, a DataLoader with one worker per core, as upstream
        (torchvision's transforms on PIL; ours compute the same).
Steady state, as in training: each provider's loader is built once (endless plan) and a
round pulls the next 8 batches; start-up (DALI's pipeline build, the DataLoader's worker
spawn) falls in the warm-up round.
"""

import itertools
import os

import pytest
import torch
from _harness import rounds

from workloads.imagenet_resnet import input_pipeline as ip
from workloads.imagenet_resnet import loaders
from workloads.imagenet_resnet.fixture import write_imagenet_fixture

BATCH, BATCHES = 64, 8
CORES = os.cpu_count() or 2
ROUNDS = 8


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet')
    write_imagenet_fixture(str(root), seed=0, num_classes=4, train_per_class=128, val_per_class=0,
                           fixed_size=(500, 375))  # fmt: skip
    return ip.split_images('train', str(root))


def _loader(provider, images):
    plan = ip.train_plan(len(images), 0, BATCH, 0, 1)
    if provider == 'dali':
        return loaders.dali_batches(images, plan, BATCH, True, seed=0, num_threads=CORES)
    return loaders.pil_batches(images, plan, True, seed=0, num_workers=CORES)


def _run(batches):
    for x, _ in itertools.islice(batches, BATCHES):
        assert x.shape == (BATCH, 3, 224, 224)


@pytest.mark.parametrize('provider', ['dali', 'pil'])
def test_imagenet_train_pipeline(benchmark, images, provider):
    if provider == 'dali' and not loaders.dali_available():
        pytest.skip('nvidia-dali not installed')
    benchmark.group = 'imagenet_train_pipeline_500x375'
    n = BATCH * BATCHES
    benchmark.extra_info.update(device='cpu', items=n, item_unit='image', peer='pil', cores=CORES,
                                torch_num_threads=torch.get_num_threads())  # fmt: skip
    batches = _loader(provider, images)
    benchmark.pedantic(_run, args=(batches,), rounds=rounds(ROUNDS), warmup_rounds=1)
    batches.close()
    stats = getattr(benchmark, 'stats', None)
    if stats is not None and getattr(stats, 'stats', None) and stats.stats.data:
        benchmark.extra_info['report'] = {'images/s': f'{n / stats.stats.median:,.0f}'}
