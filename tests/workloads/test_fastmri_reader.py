"""The fastMRI h5 reader on the tiny fixture: splits, preprocessing, masks, shards, padding.

The preprocessing oracle below is written from upstream's formulas
(algoperf/workloads/fastmri/input_pipeline.py `_process_example`) in float64 numpy, with
plain loops for the mask and explicit index arithmetic for the shifts and crop.
"""

import math
import os

import h5py
import numpy as np
import pytest
import torch

from workloads.fastmri import input_pipeline as ip
from workloads.fastmri.fixture import write_fastmri_fixture

RNG = np.array([7, 11], dtype=np.uint32)
KEYS = ('inputs', 'targets', 'mean', 'std', 'volume_max')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('fastmri')
    write_fastmri_fixture(str(d), seed=3, slices=[3, 4, 3, 2, 3])
    return str(d)


def _oracle(kspace, target, volume_max, uniform):
    """Upstream's per-slice formulas, float64, written out."""
    h, w = kspace.shape
    num_low = math.floor(w * 0.08)
    mask = np.zeros(w)
    start = (w - num_low + 1) // 2
    for c in range(w):
        if start <= c < start + num_low or uniform[c] < (w / 4 - num_low) / (w - num_low):
            mask[c] = 1.0
    x = kspace.astype(np.complex128) * mask[None, :]
    # ifftshift: element (i, j) moves to ((i - h//2) % h, (j - w//2) % w); fftshift undoes +.
    x = np.roll(x, (-(h // 2), -(w // 2)), axis=(0, 1))
    img = np.fft.ifft2(x) * math.sqrt(h * w)
    img = np.roll(img, (h // 2, w // 2), axis=(0, 1))
    top, left = (h - 320) // 2, (w - 320) // 2
    mag = np.abs(img[top : top + 320, left : left + 320])
    mean = mag.mean()
    std = math.sqrt(((mag - mean) ** 2).mean())
    return {
        'inputs': np.clip((mag - mean) / std, -6, 6),
        'targets': np.clip((target.astype(np.float64) - mean) / std, -6, 6),
        'mean': mean,
        'std': std,
        'volume_max': volume_max,
    }


def _take(ds, n):
    return [next(ds) for _ in range(n)]


def _names(paths):
    return [os.path.basename(p) for p in paths]


def test_splits_follow_upstream(data_dir, monkeypatch):
    train = ip.split_files('train', data_dir)
    assert train == ip.split_files('eval_train', data_dir) == sorted(train) and len(train) == 2
    val_all = sorted(os.listdir(os.path.join(data_dir, ip.VAL_DIR)))
    assert _names(ip.split_files('validation', data_dir)) == val_all  # 3 < 100 files
    with pytest.raises(FileNotFoundError, match='no test files .*beyond the first 100 sorted'):
        ip.split_files('test', data_dir)
    monkeypatch.setattr(ip, 'NUM_VALIDATION_FILES', 2)  # the cut, at a size the fixture has
    assert _names(ip.split_files('validation', data_dir)) == val_all[:2]
    assert _names(ip.split_files('test', data_dir)) == val_all[2:]
    n_val = len(ip.get_fastmri_dataset('validation', data_dir, RNG, 4).examples)
    n_test = len(ip.get_fastmri_dataset('test', data_dir, RNG, 4).examples)
    with h5py.File(os.path.join(data_dir, ip.VAL_DIR, val_all[2]), 'r') as hf:
        assert n_test == hf['kspace'].shape[0] and n_val + n_test == 3 + 2 + 3


def test_clear_errors(tmp_path, data_dir):
    with pytest.raises(FileNotFoundError, match=r'knee_singlecoil_train.*not found.*\*\.h5'):
        ip.get_fastmri_dataset('train', str(tmp_path / 'nowhere'), RNG, 4)
    (tmp_path / ip.TRAIN_DIR).mkdir()
    (tmp_path / ip.VAL_DIR).mkdir()
    with pytest.raises(
        FileNotFoundError, match=r'no train files \(\*\.h5\) in .*knee_singlecoil_train'
    ):
        ip.get_fastmri_dataset('train', str(tmp_path), RNG, 4)
    with pytest.raises(ValueError, match='unknown split'):
        ip.get_fastmri_dataset('dev', data_dir, RNG, 4)
    with pytest.raises(ValueError, match='multiple of world_size'):
        ip.get_fastmri_dataset('train', data_dir, RNG, 6, world_size=4)
    with h5py.File(tmp_path / ip.TRAIN_DIR / 'bad.h5', 'w') as hf:
        hf.create_dataset('kspace', data=np.zeros((1, 4, 4), np.complex64))
    with pytest.raises(ValueError, match=r"bad\.h5 lacks 'kspace' or 'reconstruction_esc'"):
        ip.get_fastmri_dataset('train', str(tmp_path), RNG, 4)
    (tmp_path / ip.TRAIN_DIR / 'bad.h5').write_bytes(b'truncated download, not HDF5')
    with pytest.raises(ValueError, match=r'bad\.h5 is not a readable HDF5 file'):
        ip.get_fastmri_dataset('train', str(tmp_path), RNG, 4)


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_preprocessing_matches_the_formulas(data_dir, split):
    ds = ip.get_fastmri_dataset(split, data_dir, RNG, 2)
    for index in range(len(ds.examples)):
        f, s = ds.examples[index]
        with h5py.File(ds.files[f], 'r') as hf:
            kspace, target = hf['kspace'][s], hf['reconstruction_esc'][s]
            volume_max = hf.attrs['max']
        uniform = ip.mask_rng(split, RNG, index).random(kspace.shape[1], dtype=np.float32)
        want = _oracle(kspace, target, volume_max, uniform)
        got = ds.example(index)
        for key in KEYS:
            assert got[key].dtype == torch.float32
            # float32 FFT of a 640 x W slice vs float64: ~1e-6 relative; 1e-4 absolute
            # on values of order 1 (normalised) leaves room without hiding a wrong shift.
            scale = 1.0 if key in ('inputs', 'targets') else abs(want[key])
            torch.testing.assert_close(
                got[key].double(),
                torch.as_tensor(want[key], dtype=torch.float64),
                rtol=1e-4,
                atol=1e-4 * scale,
            )


@pytest.mark.parametrize('shape', [(640, 368), (640, 369), (641, 372), (639, 355)])
def test_even_and_odd_sizes_match_the_formulas(shape):
    # Even sizes skip the shifts (checkerboard modulation); odd ones roll: both must agree
    # with the float64 oracle's explicit ifftshift / fftshift.
    rng = np.random.default_rng(shape[1])
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    target = rng.random((320, 320)).astype(np.float32)
    uniform = rng.random(shape[1], dtype=np.float32)
    got, want = (
        ip.process_slice(kspace, target, 2.0, uniform),
        _oracle(kspace, target, 2.0, uniform),
    )
    for key in KEYS:
        torch.testing.assert_close(got[key].double(), torch.as_tensor(want[key], dtype=torch.float64),
                                   rtol=1e-4, atol=1e-4 * (1.0 if key in ('inputs', 'targets') else abs(want[key])))  # fmt: skip


def test_full_sampling_reconstructs_the_target(data_dir):
    # The fixture's target is the centre crop of the image whose centred ortho FFT is the
    # k-space, so an all-ones mask must give inputs == targets: checks shifts and crop.
    ds = ip.get_fastmri_dataset('validation', data_dir, RNG, 2)
    with h5py.File(ds.files[0], 'r') as hf:
        out = ip.process_slice(hf['kspace'][1], hf['reconstruction_esc'][1], 1.0, np.zeros(368))
    torch.testing.assert_close(out['inputs'], out['targets'], rtol=0, atol=1e-4)


def test_mask_statistics():
    for width in (368, 372, 356, 640):
        num_low = int(width * 0.08)
        start = (width - num_low + 1) // 2
        masks = np.stack([
            ip.sample_mask(width, ip.mask_rng('train', RNG, i).random(width, dtype=np.float32))
            for i in range(400)
        ])  # fmt: skip
        assert masks[:, start : start + num_low].all()  # centre lines always present
        assert masks[:, start - 1].mean() < 1 and masks[:, start + num_low].mean() < 1
        acceleration = width / masks.sum(axis=1).mean()
        assert abs(acceleration - 4.0) < 0.05, (width, acceleration)
        assert len({m.tobytes() for m in masks}) == len(masks)  # per-example randomness
    # Eval: one fixed seed, the same mask for every slice of a width (upstream PRNGKey(0)).
    evals = {ip.mask_rng('validation', RNG, i).random(368).tobytes() for i in range(5)}
    assert len(evals) == 1


def test_shapes_padding_and_weights(data_dir):
    n = 3 + 2 + 3  # validation: every val file of the fixture (3 < 100)
    batches = list(ip.get_fastmri_dataset('validation', data_dir, RNG, 3))
    assert len(batches) == math.ceil(n / 3)
    for b in batches:
        assert set(b) == {*KEYS, 'weights'}
        assert b['inputs'].shape == b['targets'].shape == (3, 320, 320)
        assert all(b[k].shape == (3,) and b[k].dtype == torch.float32 for k in KEYS[2:])
        assert b['inputs'].abs().max() <= 6 and b['targets'].abs().max() <= 6
    weights = torch.cat([b['weights'] for b in batches])
    assert weights.tolist() == [1.0] * n + [0.0] * (3 * len(batches) - n)
    last, real = batches[-1], n - 3 * (len(batches) - 1)
    assert real < 3 and not last['inputs'][real:].any() and not last['volume_max'][real:].any()
    assert (last['std'][:real] > 0).all()
    train = next(ip.get_fastmri_dataset('train', data_dir, RNG, 4))
    assert set(train) == set(KEYS)  # train batches carry no weights, as upstream


def test_rank_shards_partition_the_global_batch(data_dir):
    # Batch 6 over 8 validation / 7 eval_train slices: the second batch's padding covers
    # rank 1's rows entirely (validation) or partly (eval_train).
    for split, n in (('train', 4), ('validation', 2), ('eval_train', 2)):
        whole = _take(ip.get_fastmri_dataset(split, data_dir, RNG, 6, n), n)
        shards = [
            _take(ip.get_fastmri_dataset(split, data_dir, RNG, 6, n, rank=r, world_size=2), n)
            for r in range(2)
        ]
        for i, batch in enumerate(whole):
            for key, value in batch.items():
                assert all(s[i][key].shape[0] == 3 for s in shards)
                assert torch.equal(torch.cat([s[i][key] for s in shards]), value), (split, i, key)


def test_train_shuffles_repeats_and_keeps_masks_per_slice(data_dir):
    ds = ip.get_fastmri_dataset('train', data_dir, RNG, 4)
    n = len(ds.examples)  # 7 train slices
    order = np.concatenate([ds.epoch_order(e) for e in range(4)])
    for e in range(4):
        assert sorted(ds.epoch_order(e)) == list(range(n))
    assert not all(np.array_equal(ds.epoch_order(0), ds.epoch_order(e)) for e in (1, 2, 3))
    got = _take(ds, 6)  # 24 examples: batches run across epoch ends (repeat, then batch)
    for i, batch in enumerate(got):
        for j in range(4):
            want = ds.example(int(order[4 * i + j]))
            assert all(torch.equal(batch[k][j], want[k]) for k in KEYS)


def test_buffer_shuffle_is_a_local_permutation():
    rng = np.random.default_rng(0)
    out = ip.buffer_shuffle(1000, 16, rng)
    assert sorted(out) == list(range(1000))
    assert (out - np.arange(1000) < 16).all()  # an element leaves at most 15 places early
    assert np.array_equal(ip.buffer_shuffle(5, 100, rng)[:0], np.zeros(0))


def test_determinism_seed_and_replay(data_dir):
    a = _take(ip.get_fastmri_dataset('train', data_dir, RNG, 2), 5)
    b = _take(ip.get_fastmri_dataset('train', data_dir, RNG, 2), 5)
    c = _take(ip.get_fastmri_dataset('train', data_dir, [8, 11], 2), 5)
    assert all(torch.equal(x['inputs'], y['inputs']) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x['inputs'], y['inputs']) for x, y in zip(a, c, strict=True))
    ds = ip.get_fastmri_dataset('validation', data_dir, RNG, 3, num_batches=2,
                                repeat_final_dataset=True)  # fmt: skip
    got = _take(ds, 6)
    assert all(torch.equal(got[i]['inputs'], got[i % 2]['inputs']) for i in range(2, 6))
    assert len(list(ip.get_fastmri_dataset('validation', data_dir, RNG, 3, num_batches=2))) == 2
    # Eval preprocessing ignores data_rng (fixed seed).
    v1 = next(ip.get_fastmri_dataset('validation', data_dir, RNG, 3))
    v2 = next(ip.get_fastmri_dataset('validation', data_dir, [1, 2], 3))
    assert torch.equal(v1['inputs'], v2['inputs'])
