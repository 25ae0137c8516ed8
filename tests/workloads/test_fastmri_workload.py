"""fastMRI workload API: SSIM against an independent implementation, loss, eval, data, training.

The SSIM reference is written from Wang et al. (2004) as scikit-image computes it
(`skimage.metrics.structural_similarity` with 7x7 uniform window, sample covariance,
border of 3 cropped), in float64 numpy with `scipy.ndimage.uniform_filter`, whose default
'reflect' mode is numpy's 'symmetric' padding.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.fastmri import ssim as ssim_lib
from workloads.fastmri import workload as fastmri

ndimage = pytest.importorskip('scipy.ndimage')
CPU = Runtime(torch.device('cpu'))


def _workload(name='fastmri'):
    return registry.get_workload(name, runtime=CPU)


def _reference_ssim(x, y, data_range, win=7, k1=0.01, k2=0.03):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    f = lambda im: ndimage.uniform_filter(im, size=win)
    n = win**2
    ux, uy = f(x), f(y)
    vx = n / (n - 1) * (f(x * x) - ux * ux)
    vy = n / (n - 1) * (f(y * y) - uy * uy)
    vxy = n / (n - 1) * (f(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    r = (win - 1) // 2
    return s[r:-r, r:-r].mean()


# ---- SSIM --------------------------------------------------------------------------------------
def test_uniform_filter_pads_symmetrically_like_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 17, 23, generator=g, dtype=torch.float64)
    expected = np.stack([ndimage.uniform_filter(im, size=7) for im in x.numpy()])
    torch.testing.assert_close(
        ssim_lib.uniform_filter(x), torch.from_numpy(expected), rtol=1e-12, atol=1e-12
    )


def test_ssim_matches_the_independent_reference():
    g = torch.Generator().manual_seed(1)
    b, h, w = 4, 40, 36
    targets = torch.randn(b, h, w, generator=g)
    outputs = targets + 0.7 * torch.randn(b, h, w, generator=g)
    mean = torch.rand(b, generator=g) * 3e-5 + 1e-5
    std = torch.rand(b, generator=g) * 2e-5 + 1e-5
    volume_max = torch.tensor([4e-4, 5e-4, 0.0, 3e-4])  # 0 (padding) -> data range 1.
    got = ssim_lib.ssim(outputs, targets, mean=mean, std=std, volume_max=volume_max)
    expected = []
    for i in range(b):
        x = outputs[i].double() * std[i].double() + mean[i].double()
        y = targets[i].double() * std[i].double() + mean[i].double()
        data_range = float(volume_max[i]) or 1.0
        expected.append(_reference_ssim(x.numpy(), y.numpy(), data_range))
    # float32 statistics of images ~1e-5 against float64: measured |diff| < 1e-5.
    torch.testing.assert_close(got.double(), torch.tensor(expected), rtol=0, atol=1e-4)
    assert got.shape == (b,) and bool((got.abs() <= 1).all())


def test_ssim_defaults_identical_images_and_clipping():
    x = torch.randn(2, 20, 20)
    torch.testing.assert_close(ssim_lib.ssim(x, x), torch.ones(2), rtol=0, atol=1e-6)
    # Mirrored structure around the same local means: negative SSIM, within [-1, 1].
    mirrored = ssim_lib.ssim(5 + x, 5 - x, volume_max=torch.full((2,), 10.0))
    assert float(mirrored.max()) < -0.5 and float(mirrored.min()) >= -1


# ---- loss --------------------------------------------------------------------------------------
def test_loss_fn_is_masked_per_example_l1():
    wl = _workload()
    g = torch.Generator().manual_seed(0)
    outputs, targets = torch.randn(2, 6, 8, 8, generator=g)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    expected = (outputs - targets).abs().mean(dim=(1, 2))
    out = wl.loss_fn(targets, outputs, mask)
    torch.testing.assert_close(out['per_example'], expected * mask)
    torch.testing.assert_close(out['summed'], (expected * mask).sum())
    assert out['n_valid_examples'] == 4
    unmasked = wl.loss_fn(targets, outputs, label_smoothing=0.1)  # Smoothing ignored.
    torch.testing.assert_close(
        unmasked['summed'], F.l1_loss(outputs, targets, reduction='sum') / 64
    )
    assert unmasked['n_valid_examples'].item() == 6


# ---- workload API, synthetic data, eval, training ----------------------------------------------
def test_init_model_fn_sets_the_trees_and_is_seeded():
    wl = _workload()
    model, state = wl.init_model_fn([7, 1])
    assert state is None and sum(p.numel() for p in model.parameters()) == 7_756_097
    assert wl.model_params_types == param_utils.pytorch_param_types(wl.param_shapes)
    again, _ = _workload().init_model_fn([7, 2])
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)  # Only rng[0] seeds, as upstream.
    assert wl.is_output_params('up_conv.3.1.weight') and not wl.is_output_params(
        'conv.conv_layers.0.weight'
    )
    assert wl.loss_type == spec.LossType.MEAN_ABSOLUTE_ERROR and wl.target_metric_name == 'ssim'
    assert _workload('fastmri_model_size').num_channels == 64


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_synthetic_batches_have_the_real_layout(split):
    runtime = Runtime(torch.device('cpu'), rank=1, world_size=2, launched_distributed=True)
    wl = fastmri.FastMRIWorkload(runtime=runtime)
    queue = wl._build_synthetic_input_queue([5, 6], split, 8)
    batch = next(queue)
    keys = {'inputs', 'targets', 'mean', 'std', 'volume_max'}
    assert set(batch) == (keys if split == 'train' else keys | {'weights'})
    for k in ('inputs', 'targets'):
        assert batch[k].shape == (4, 320, 320) and batch[k].dtype == torch.float32
        assert float(batch[k].abs().max()) <= 6
    for k in ('mean', 'std', 'volume_max') + (() if split == 'train' else ('weights',)):
        assert batch[k].shape == (4,) and batch[k].dtype == torch.float32
    assert bool((batch['std'] > 0).all()) and bool((batch['volume_max'] > 0).all())
    assert not torch.equal(next(queue)['inputs'], batch['inputs'])


def test_real_reader_queue_and_data_dir_checks(tmp_path):
    from workloads.fastmri.fixture import write_fastmri_fixture

    wl = _workload()
    # The reader fails at the call, not at the first batch.
    with pytest.raises(FileNotFoundError, match='knee_singlecoil_train'):
        wl._build_input_queue([0, 0], 'train', str(tmp_path), 8)
    (tmp_path / 'knee_singlecoil_train').mkdir()
    (tmp_path / 'knee_singlecoil_val').mkdir()
    with pytest.raises(FileNotFoundError, match=r'no \*\.h5 files in .*knee_singlecoil_train'):
        wl.validate_data_dir(str(tmp_path))
    write_fastmri_fixture(str(tmp_path), seed=1)
    wl.validate_data_dir(str(tmp_path))
    batch = next(wl._build_input_queue([0, 0], 'validation', str(tmp_path), 4, num_batches=1))
    assert batch['inputs'].shape == (4, 320, 320) and batch['weights'].tolist() == [1.0] * 4


def _small_workload():
    """The base workload with a 4-channel U-Net: the API is the same, CPU tests are fast."""
    wl = _workload()
    wl._build_model = lambda: fastmri.models.UNet(num_channels=4, num_pool_layers=4)
    return wl


def test_eval_sums_ssim_and_loss_over_examples_and_skips_padding():
    wl = _small_workload()
    model, _ = wl.init_model_fn([0, 0])
    pool = [next(wl._build_synthetic_input_queue([1, 1], 'validation', 4))]
    pool[0]['weights'] = torch.tensor([1.0, 1.0, 1.0, 0.0])
    wl._build_input_queue = lambda *a, **kw: iter(pool * 2)
    result = wl._eval_model_on_split('validation', 6, 4, model, None, [1, 1], '')
    b = pool[0]
    with torch.no_grad():
        model.eval()
        out = model(b['inputs'][:3, None])[:, 0]
    ssims = ssim_lib.ssim(out, b['targets'][:3], b['mean'][:3], b['std'][:3], b['volume_max'][:3])
    loss = (out - b['targets'][:3]).abs().mean(dim=(1, 2))
    assert set(result) == {'ssim', 'loss'}
    assert result['ssim'] == pytest.approx(2 * ssims.sum().item() / 6, rel=1e-5)
    assert result['loss'] == pytest.approx(2 * loss.sum().item() / 6, rel=1e-5)


def test_nadamw_baseline_lowers_the_loss_on_synthetic_batches():
    from submissions.baselines.nadamw import submission as nadamw

    wl = _small_workload()
    model, state = wl.init_model_fn([0, 0])
    hp = nadamw.SELF_TUNING_HPARAMS._replace(warmup_factor=0.001)
    opt = nadamw.init_optimizer_state(wl, model, state, hp, [0, 0])
    queue = wl._build_synthetic_input_queue([0, 1], 'train', 4)
    pool = [next(queue) for _ in range(4)]

    def train_loss():
        with torch.no_grad():
            total = 0.0
            for batch in pool:
                out, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
                total += wl.loss_fn(batch['targets'], out)['summed'].item()
            return total / 16

    before = train_loss()
    for step in range(12):
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, hp, next(queue), wl.loss_type, opt, [],
            step, [0, step],
        )  # fmt: skip
    after = train_loss()
    assert math.isfinite(after) and after < 0.9 * before, (before, after)


def test_missing_data_layout_fails_early_with_a_clear_error(tmp_path, capsys):
    from algoperf import cli

    code = cli.main([
        'run', '--workload=fastmri', f'--data_dir={tmp_path}', '--tuning_ruleset=self',
        '--submission_path=submissions/baselines/nadamw/submission.py', f'--experiment_dir={tmp_path / "exp"}',
        '--experiment_name=x', '--noprogress',
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert 'knee_singlecoil_train' in err and 'not found' in err and str(tmp_path) in err
    assert not (tmp_path / 'exp').exists()  # nothing written
