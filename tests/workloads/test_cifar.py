"""CIFAR-10 ResNet-18: model (count, type tree, init), reader on the pickle fixture
(splits, normalisation, augmentation, DDP sharding, eval padding), and the runner.

References: the count is derived from the layer list; normalisation is recomputed in
float64 numpy from the raw bytes; the train order is compared with
`torch.utils.data.DistributedSampler` itself; crops are checked by searching every
offset and flip of the zero-padded image.
"""

import dataclasses
import json
import pickle
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DistributedSampler

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.cifar import input_pipeline, models
from workloads.cifar.fixture import write_cifar_fixture
from workloads.cifar.spec import CIFAR

CPU = Runtime(torch.device('cpu'))
T = spec.ParameterType
# The fixture: 5 train files of 24 images (120 = 100 train + 20 validation) and 40 test.
TINY = CIFAR.variant(
    name='cifar_fixture',
    num_train_examples=100,
    num_validation_examples=20,
    num_eval_train_examples=24,  # ceil(20 / 8) * 8.
    num_test_examples=40,
    eval_batch_size=8,
)


@pytest.fixture(autouse=True)
def _tiny_spec_registered():
    registry.register(TINY, overwrite=True)
    yield
    registry.unregister(TINY.name)


def _workload(name='cifar_fixture', runtime=CPU):
    return registry.get_workload(name, runtime=runtime)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('cifar')
    write_cifar_fixture(str(d), seed=3)
    return str(d)


# ---- model -------------------------------------------------------------------------------------
def _expected_count(num_classes=10):
    total = 3 * 3 * 3 * 64 + 2 * 64  # 3x3 stem + BN.
    inplanes = 64
    for planes in (64, 128, 256, 512):
        for i in range(2):
            cin = inplanes if i == 0 else planes
            total += 9 * cin * planes + 9 * planes * planes + 2 * 2 * planes
            if i == 0 and cin != planes:
                total += cin * planes + 2 * planes  # 1x1 downsample + BN.
        inplanes = planes
    return total + 512 * num_classes + num_classes


def test_parameter_count_and_type_tree():
    assert _expected_count() == 11_173_962
    with torch.device('meta'):
        model = _workload('cifar')._build_model()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    tree = {
        'conv1.weight': T.CONV_WEIGHT,
        'bn1.weight': T.BATCH_NORM_SCALE,
        'bn1.bias': T.BATCH_NORM_BIAS,
    }
    for s in range(1, 5):
        for i in range(2):
            for j in (1, 2):
                tree[f'layer{s}.{i}.conv{j}.weight'] = T.CONV_WEIGHT
                tree[f'layer{s}.{i}.bn{j}.weight'] = T.BATCH_NORM_SCALE
                tree[f'layer{s}.{i}.bn{j}.bias'] = T.BATCH_NORM_BIAS
            if i == 0 and s > 1:
                tree[f'layer{s}.0.downsample.conv.weight'] = T.CONV_WEIGHT
                tree[f'layer{s}.0.downsample.bn.weight'] = T.BATCH_NORM_SCALE
                tree[f'layer{s}.0.downsample.bn.bias'] = T.BATCH_NORM_BIAS
    tree['fc.weight'], tree['fc.bias'] = T.WEIGHT, T.BIAS
    types = param_utils.pytorch_param_types(param_utils.pytorch_param_shapes(model))
    assert list(types.items()) == list(tree.items())
    assert [k for k in types if _workload('cifar').is_output_params(k)] == ['fc.weight', 'fc.bias']


def test_init_and_shapes():
    torch.manual_seed(0)
    model = models.resnet18()
    w = model.layer2[1].conv1.weight.detach()  # 3x3, 128 -> 128: fan_in 1152.
    assert float(w.std()) == pytest.approx((1 / 1152) ** 0.5, rel=0.02)
    assert float(w.abs().max()) <= 2 * (1 / 1152) ** 0.5 / 0.87962566103423978 + 1e-7
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    for s in range(1, 5):
        for i in range(2):
            block = getattr(model, f'layer{s}')[i]
            assert bool((block.bn2.weight == 0).all()) and bool((block.bn1.weight == 1).all())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---- reader ------------------------------------------------------------------------------------
def _raw(data_dir, files):
    parts = []
    for f in files:
        with open(f'{data_dir}/cifar-10-batches-py/{f}', 'rb') as fh:
            d = pickle.load(fh, encoding='bytes')
        parts.append((d[b'data'], np.array(d[b'labels'])))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _normalised(raw_rows):
    x = raw_rows.reshape(-1, 3, 32, 32).astype(np.float64) / 255
    mean = np.array([0.49139968, 0.48215827, 0.44653124])[None, :, None, None]
    std = np.array([0.24703233, 0.24348505, 0.26158768])[None, :, None, None]
    return torch.from_numpy((x - mean) / std)


@pytest.mark.parametrize('split', ['validation', 'eval_train', 'test'])
def test_eval_splits_values_and_padding(data_dir, split):
    wl = _workload()
    raw, labels = _raw(data_dir, ['test_batch'] if split == 'test' else input_pipeline.TRAIN_FILES)
    if split == 'validation':
        idx = np.arange(100, 120)
    elif split == 'eval_train':
        order = list(range(100))
        random.Random(7).shuffle(order)
        idx = np.array(order[:24])
    else:
        idx = np.arange(40)
    batches = []
    queue = wl._build_input_queue(
        [7, 8], split, data_dir, 16, cache=True, repeat_final_dataset=True
    )
    n_batches = -(-len(idx) // 16)
    for _ in range(n_batches + 1):  # One more: the stream repeats.
        batches.append(next(queue))
    inputs = torch.cat([b['inputs'] for b in batches[:n_batches]])
    weights = torch.cat([b['weights'] for b in batches[:n_batches]])
    n = len(idx)
    assert weights.tolist() == [1.0] * n + [0.0] * (16 * n_batches - n)
    # float32 (x/255 - mean)/std against float64: a few ulps of values up to ~2.1.
    torch.testing.assert_close(inputs[:n].double(), _normalised(raw[idx]), rtol=0, atol=1e-6)
    assert torch.equal(
        torch.cat([b['targets'] for b in batches[:n_batches]])[:n], torch.from_numpy(labels[idx])
    )
    assert torch.equal(batches[n_batches]['inputs'], batches[0]['inputs'])


def test_eval_batches_shard_by_rank(data_dir):
    full = next(_workload()._build_input_queue([0, 0], 'validation', data_dir, 16))
    shards = []
    for rank in (0, 1):
        runtime = dataclasses.replace(CPU, rank=rank, world_size=2)
        queue = _workload(runtime=runtime)._build_input_queue([0, 0], 'validation', data_dir, 16)
        shards.append([next(queue), next(queue)])
    for k in ('inputs', 'targets', 'weights'):
        assert torch.equal(torch.cat([shards[0][0][k], shards[1][0][k]]), full[k])
    # The second global batch has 4 real rows: rank 1's 8 rows are all padding.
    assert shards[0][1]['weights'].tolist() == [1.0] * 4 + [0.0] * 4
    assert shards[1][1]['weights'].tolist() == [0.0] * 8


@pytest.mark.parametrize('world_size', [1, 3])
def test_train_order_is_distributed_samplers(world_size):
    dataset = list(range(100))
    for epoch in (0, 1):
        for rank in range(world_size):
            sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0
            )
            sampler.set_epoch(epoch)
            ours = input_pipeline.sampler_indices(100, epoch, rank, world_size)
            assert ours.tolist() == list(sampler)


def _is_crop_of(out, image):
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))
    for dy in range(9):
        for dx in range(9):
            crop = padded[:, dy : dy + 32, dx : dx + 32]
            if np.array_equal(out, crop) or np.array_equal(out, crop[:, :, ::-1]):
                return True
    return False


def test_train_batches_are_augmented_crops_in_sampler_order(data_dir):
    wl = _workload()
    raw, labels = _raw(data_dir, input_pipeline.TRAIN_FILES)
    queue = wl._build_input_queue([5, 0], 'train', data_dir, 10)
    order = input_pipeline.sampler_indices(100, 0, 0, 1)
    batches = [next(queue) for _ in range(11)]  # 10 per epoch, then epoch 1.
    assert torch.equal(batches[0]['targets'], torch.from_numpy(labels[order[:10].numpy()]))
    assert (
        batches[0]['inputs'].shape == (10, 3, 32, 32)
        and batches[0]['inputs'].dtype == torch.float32
    )
    mean = torch.tensor(input_pipeline.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(input_pipeline.STD).view(1, 3, 1, 1)
    pixels = torch.round((batches[0]['inputs'] * std + mean) * 255).to(torch.uint8).numpy()
    images = raw[order[:10].numpy()].reshape(-1, 3, 32, 32)
    assert all(_is_crop_of(pixels[i], images[i]) for i in range(10))
    epoch1 = input_pipeline.sampler_indices(100, 1, 0, 1)
    assert torch.equal(batches[10]['targets'], torch.from_numpy(labels[epoch1[:10].numpy()]))


def test_augmentation_draws_every_offset_and_both_flips():
    """Ones with a marker column (2) at x = 0; padding is 0. Zero rows at the bottom minus
    at the top is the vertical offset - 4 (same for columns); the marker's side tells a flip."""
    g = torch.Generator().manual_seed(0)
    images = torch.ones(4000, 1, 32, 32, dtype=torch.uint8)
    images[:, :, :, 0] = 2
    out = input_pipeline.random_crop_flip(images, g).long()
    assert out.shape == images.shape
    zero_rows, zero_cols = (out == 0).all(dim=3)[:, 0], (out == 0).all(dim=2)[:, 0]
    dy = zero_rows[:, 16:].sum(1) - zero_rows[:, :16].sum(1)
    dx = zero_cols[:, 16:].sum(1) - zero_cols[:, :16].sum(1)
    assert set(dy.tolist()) == set(range(-4, 5)) and set(dx.abs().tolist()) == set(range(5))
    marker = (out == 2).any(dim=2)[:, 0].float().argmax(dim=1)  # Column of the marker.
    visible = (out == 2).any(dim=(1, 2, 3))
    flipped = marker[visible] >= 16
    assert 0.45 < float(flipped.float().mean()) < 0.55
    # Nothing but image pixels and zero padding (exact crops are checked on the fixture).
    assert set(out.unique().tolist()) <= {0, 1, 2}


def test_validate_data_dir(tmp_path, data_dir):
    _workload().validate_data_dir(data_dir)
    with pytest.raises(FileNotFoundError, match='data_batch_1.*test_batch'):
        _workload().validate_data_dir(str(tmp_path))
    (tmp_path / 'cifar-10-batches-py').mkdir()
    (tmp_path / 'cifar-10-batches-py' / 'data_batch_1').write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match='data_batch_1'):
        input_pipeline.load_batch_file(str(tmp_path / 'cifar-10-batches-py' / 'data_batch_1'))


def test_split_sizes_must_match_the_files(data_dir):
    with pytest.raises(ValueError, match='120 images'):
        _workload('cifar')._build_input_queue([0, 0], 'train', data_dir, 8)


# ---- runner ------------------------------------------------------------------------------------
def test_baseline_trains_and_evaluates_on_the_fixture_through_the_runner(tmp_path, data_dir):
    from algoperf import cli

    code = cli.main([
        'run', '--workload=cifar_fixture', '--submission_path=tests/data/submissions/tiny_batch_nadamw.py',
        '--tuning_ruleset=self', f'--data_dir={data_dir}', f'--experiment_dir={tmp_path}',
        '--experiment_name=cifar', '--noprogress', '--max_global_steps=3', '--save_checkpoints=false',
        '--rng_seed=1', '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'cifar' / 'cifar_fixture_pytorch' / 'trial_1'
    assert json.loads((trial / 'result.json').read_text())['status'] == 'max_global_steps'
    evals = pd.read_csv(trial / 'eval_measurements.csv')
    assert len(evals) >= 1
    for split, n in (('validation', 20), ('test', 40)):
        assert (evals[f'{split}/num_examples'] == n).all()
        assert evals[f'{split}/accuracy'].between(0, 1).all() and (evals[f'{split}/loss'] > 0).all()
    train = pd.read_csv(trial / 'measurements.csv')
    assert (train['loss'].dropna().astype(float) > 0).all()
