"""ImageNet ResNet-50 and ViT-S/16 workload API: loss against an independent formula,
batch-norm update semantics, eval sums, synthetic batches, training steps, data dir.

The loss reference is written from the definition: label-smoothed targets
(1 - ls) * onehot + ls / C, per-example -Σ targets * log_softmax(logits), in float64.
"""

import dataclasses
import math

import pytest
import torch

from algoperf import registry, spec
from algoperf.runtime import Runtime
from workloads.imagenet_resnet import models as resnet_models

CPU = Runtime(torch.device('cpu'))
NAMES = (
    'imagenet_resnet', 'imagenet_resnet_silu', 'imagenet_resnet_gelu', 'imagenet_resnet_large_bn_init',
    'imagenet_vit', 'imagenet_vit_glu', 'imagenet_vit_post_ln', 'imagenet_vit_map',
)  # fmt: skip


def _workload(name='imagenet_resnet', **kwargs):
    return registry.get_workload(name, runtime=CPU, **kwargs)


def _small_resnet_workload(**kwargs):
    """The base workload with one basic block per stage and 10 classes: same API, fast."""
    wl = _workload(**kwargs)
    wl.num_classes = 10
    wl._build_model = lambda: resnet_models.ResNet(
        resnet_models.BasicBlock, [1, 1, 1, 1], 10, None, 1.0
    )
    return wl


# ---- loss --------------------------------------------------------------------------------------
def _reference_ce(logits, targets, label_smoothing):
    logits = logits.double()
    c = logits.shape[1]
    if targets.dtype == torch.int64:
        targets = torch.nn.functional.one_hot(targets, c).double()
    targets = (1 - label_smoothing) * targets.double() + label_smoothing / c
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
@pytest.mark.parametrize('soft', [False, True])
def test_loss_fn_is_masked_smoothed_cross_entropy(label_smoothing, soft):
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(6, 1000, generator=g)
    if soft:  # Mixup-style targets: two one-hots mixed.
        labels = 0.7 * torch.nn.functional.one_hot(torch.arange(6), 1000).float()
        labels += 0.3 * torch.nn.functional.one_hot(torch.arange(6).roll(1), 1000).float()
    else:
        labels = torch.randint(0, 1000, (6,), generator=g)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    wl = _workload()
    out = wl.loss_fn(labels, logits, mask, label_smoothing=label_smoothing)
    expected = _reference_ce(logits, labels, label_smoothing) * mask
    # float32 log-softmax over 1,000 classes against float64: a few ulps of |loss| ~ 10.
    torch.testing.assert_close(out['per_example'].double(), expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(out['summed'].double(), expected.sum(), rtol=1e-6, atol=1e-5)
    assert float(out['n_valid_examples']) == 4.0
    unmasked = wl.loss_fn(labels, logits)
    assert (
        unmasked['n_valid_examples'].dtype == torch.int64 and int(unmasked['n_valid_examples']) == 6
    )


# ---- model_fn ----------------------------------------------------------------------------------
def test_batch_norm_statistics_move_only_when_asked():
    wl = _small_resnet_workload()
    model, _ = wl.init_model_fn([0, 0])
    batch = {'inputs': torch.randn(2, 3, 32, 32)}
    stats = lambda: [b.clone() for b in model.buffers() if b.dtype.is_floating_point]
    before = stats()
    wl.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, update_batch_norm=False)
    assert all(torch.equal(a, b) for a, b in zip(before, stats()))
    assert model.training
    wl.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, update_batch_norm=True)
    assert not any(torch.equal(a, b) for a, b in zip(before, stats()))
    assert model.bn1.momentum == 0.1  # Restored after the freeze.
    after = stats()
    logits, state = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    assert state is None and not logits.requires_grad and not model.training
    assert all(torch.equal(a, b) for a, b in zip(after, stats()))
    with pytest.raises(ValueError, match='cannot be updated during evaluation'):
        wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, update_batch_norm=True)


def test_channels_last_workload_matches_the_default_one():
    # Batch 4 at 36 x 32 as in the model parity test: training-mode BN over fewer samples
    # (2 x 1 x 1 in layer4 at batch 2, 32 x 32) is ill-conditioned enough to amplify the
    # reordering differences past the bound.
    g = torch.Generator().manual_seed(1)
    batch = {
        'inputs': torch.randn(4, 3, 36, 32, generator=g),
        'targets': torch.tensor([1, 7, 0, 2]),
    }
    outs = []
    for channels_last in (False, True):
        wl = _small_resnet_workload(channels_last=channels_last)
        model, _ = wl.init_model_fn([3, 0])
        assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True)
        wl.loss_fn(batch['targets'], logits)['summed'].backward()
        outs.append((logits.detach(), model.conv1.weight.grad, model.bn1.running_mean.clone()))
    # Same reordered-sum bound as the model parity tests (tests/workloads/test_imagenet_models.py).
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_vit_model_fn_passes_dropout_and_ignores_update_batch_norm():
    wl = _workload('imagenet_vit')
    assert wl.use_sdpa is False  # CPU default: upstream's attention math.
    assert _workload('imagenet_vit', use_sdpa=True).use_sdpa is True
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, dropout_rate):
            seen.append((self.training, dropout_rate, torch.is_grad_enabled()))
            return x.mean(dim=(2, 3))

    probe = Probe()
    batch = {'inputs': torch.randn(2, 3, 8, 8)}
    wl.model_fn(probe, batch, None, spec.ForwardPassMode.TRAIN, None, True, dropout_rate=0.25)
    wl.model_fn(probe, batch, None, spec.ForwardPassMode.EVAL, None, True)
    assert seen == [(True, 0.25, True), (False, 0.0, False)]


# ---- API constants and eval --------------------------------------------------------------------
@pytest.mark.parametrize('name', NAMES)
def test_output_params_exist_and_constants(name):
    wl = _workload(name)
    with torch.device('meta'):
        names = dict(wl._build_model().named_parameters())
    out = [k for k in names if wl.is_output_params(k)]
    assert out == (['head.weight', 'head.bias'] if 'vit' in name else ['fc.weight', 'fc.bias'])
    assert (
        wl.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY and wl.target_metric_name == 'accuracy'
    )
    assert wl.eval_batch_size == (2048 if 'vit' in name else 1024)


def test_eval_sums_accuracy_and_loss_and_skips_padding():
    wl = _small_resnet_workload()
    model, _ = wl.init_model_fn([0, 0])
    g = torch.Generator().manual_seed(2)
    batch = {
        'inputs': torch.randn(4, 3, 32, 32, generator=g),
        'targets': torch.tensor([0, 3, 3, 9]),
        'weights': torch.tensor([1.0, 1.0, 1.0, 0.0]),
    }
    wl._build_input_queue = lambda *a, **kw: iter([batch] * 2)
    result = wl._eval_model_on_split('validation', 6, 4, model, None, [1, 1], '')
    model.eval()
    with torch.no_grad():
        logits = model(batch['inputs'][:3])
    correct = (logits.argmax(1) == batch['targets'][:3]).sum().item()
    loss = _reference_ce(logits, batch['targets'][:3], 0.0).sum().item()
    assert set(result) == {'accuracy', 'loss'}
    assert result['accuracy'] == pytest.approx(2 * correct / 6, abs=1e-12)
    assert result['loss'] == pytest.approx(2 * loss / 6, rel=1e-5)


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_synthetic_batches_have_the_real_layout(split):
    queue = _workload('imagenet_vit')._build_synthetic_input_queue([5, 6], split, 2)
    batch = next(queue)
    assert batch['inputs'].shape == (2, 3, 224, 224) and batch['inputs'].dtype == torch.float32
    assert batch['targets'].shape == (2,) and batch['targets'].dtype == torch.int64
    assert 0 <= int(batch['targets'].min()) and int(batch['targets'].max()) < 1000
    assert ('weights' in batch) == (split != 'train')
    assert not torch.equal(next(queue)['inputs'], batch['inputs'])
    two_ranks = dataclasses.replace(CPU, rank=1, world_size=2)
    wl = registry.get_workload('imagenet_resnet', runtime=two_ranks)
    assert next(wl._build_synthetic_input_queue([5, 6], split, 8))['inputs'].shape == (
        4,
        3,
        224,
        224,
    )


# ---- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize('name, size', [('imagenet_resnet', 64), ('imagenet_vit', 224)])
def test_nadamw_steps_on_the_full_model(name, size):
    """Two baseline steps of the real model at batch 2 (ResNet at 64 x 64; ViT needs 224)."""
    from submissions.baselines.nadamw import submission as nadamw

    wl = _workload(name)
    model, state = wl.init_model_fn([0, 0])
    assert set(wl.model_params_types) == {k for k, _ in model.named_parameters()}
    hp = nadamw.SELF_TUNING_HPARAMS._replace(warmup_factor=0.001, dropout_rate=0.1)
    opt = nadamw.init_optimizer_state(wl, model, state, hp, [0, 0])
    g = torch.Generator().manual_seed(0)
    batch = {
        'inputs': torch.randn(2, 3, size, size, generator=g),
        'targets': torch.tensor([3, 999]),
    }
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(2):
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, hp, batch, wl.loss_type, opt, [], step, [0, step],
        )  # fmt: skip
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert all(changed)  # Every parameter moved, the zero-initialised ones included.
    logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    assert math.isfinite(wl.loss_fn(batch['targets'], logits)['summed'].item())


# ---- data dir ----------------------------------------------------------------------------------
def test_missing_data_fails_early_with_nothing_written(tmp_path, capsys):
    from algoperf import cli

    code = cli.main([
        'run', '--workload=imagenet_vit', f'--data_dir={tmp_path}', '--tuning_ruleset=self',
        '--submission_path=submissions/baselines/nadamw/submission.py', f'--experiment_dir={tmp_path / "exp"}',
        '--experiment_name=x', '--noprogress',
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f'{tmp_path}/train: directory not found' in err and '<wnid>/*.JPEG' in err
    assert not (tmp_path / 'exp').exists()
    with pytest.raises(FileNotFoundError):
        _workload('imagenet_resnet_gelu')._build_input_queue([0, 0], 'train', str(tmp_path), 8)
