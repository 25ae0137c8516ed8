"""Criteo 1TB workload API: init, loss, eval, the data queues, and training steps.

Uses the CI variant `criteo1tb_test` (65,536-row table) on the CPU; the synthetic queue
stands in for the TSV reader except where a fake reader checks the call contract.
"""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.criteo1tb import workload as criteo

CPU = Runtime(torch.device('cpu'))


def _workload(name):
    return registry.get_workload(name, runtime=CPU)


def test_init_model_fn_sets_the_trees_and_is_seeded():
    wl = _workload('criteo1tb_test')
    model, state = wl.init_model_fn([7, 1])
    assert state is None and not torch.backends.cudnn.benchmark
    with torch.device('meta'):
        shapes = param_utils.pytorch_param_shapes(_workload('criteo1tb_test')._build_model())
    assert wl.param_shapes == shapes  # Names checked against upstream's in test_criteo_models.
    assert wl.model_params_types == param_utils.pytorch_param_types(shapes)
    again, _ = _workload('criteo1tb_test').init_model_fn([7, 2])
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)  # Only rng[0] seeds, as upstream.
    # Upstream's (stale) output-layer names.
    assert wl.is_output_params('top_mlp.4.weight') and not wl.is_output_params('top_mlp.9.weight')


def test_workload_constants_come_from_the_spec():
    assert _workload('criteo1tb').vocab_size == 4_194_304
    assert _workload('criteo1tb_test').vocab_size == 65_536
    assert _workload('criteo1tb_layernorm').use_layer_norm
    assert _workload('criteo1tb_resnet').use_resnet
    assert _workload('criteo1tb_embed_init').embedding_init_multiplier == 1.0
    assert _workload('criteo1tb').eval_batch_size == 8_192
    assert _workload('criteo1tb').loss_type == spec.LossType.SIGMOID_CROSS_ENTROPY


# ---- loss ------------------------------------------------------------------------------------
def test_loss_fn_is_masked_sigmoid_cross_entropy():
    wl = _workload('criteo1tb_test')
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1, generator=g) * 10
    logits[:2, 0] = torch.tensor([60.0, -60.0])  # Log-sigmoid stays finite at large |x|.
    targets = (torch.rand(64, generator=g) < 0.3).float()
    mask = (torch.rand(64, generator=g) < 0.8).float()
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], targets, reduction='none')
    out = wl.loss_fn(targets, logits, mask)
    torch.testing.assert_close(out['per_example'], expected * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out['summed'], (expected * mask).sum(), rtol=1e-5, atol=1e-5)
    assert out['n_valid_examples'] == mask.sum()
    unmasked = wl.loss_fn(targets[:, None], logits, label_smoothing=0.1)  # Smoothing ignored.
    torch.testing.assert_close(unmasked['per_example'], expected, rtol=1e-5, atol=1e-6)
    assert unmasked['n_valid_examples'].dtype == torch.int64
    assert unmasked['n_valid_examples'].item() == 64


# ---- synthetic data, eval, training ------------------------------------------------------------
@pytest.mark.parametrize('split', ['train', 'validation'])
def test_synthetic_batches_have_the_real_layout(split):
    runtime = Runtime(torch.device('cpu'), rank=1, world_size=2, launched_distributed=True)
    wl = criteo.Criteo1TbDlrmSmallTestWorkload(runtime=runtime)
    queue = wl._build_synthetic_input_queue([5, 6], split, 64)
    batch = next(queue)
    assert set(batch) == {'inputs', 'targets', 'weights'}
    assert batch['inputs'].shape == (32, 39) and batch['inputs'].dtype == torch.float32
    assert batch['targets'].shape == (32,) and batch['targets'].dtype == torch.float32
    assert batch['weights'].shape == (32,) and bool((batch['weights'] == 1).all())
    dense, ids = batch['inputs'][:, :13], batch['inputs'][:, 13:]
    assert bool((dense >= 0).all()) and bool((ids == ids.floor()).all())
    assert bool((ids < torch.tensor(criteo.RAW_VOCAB_SIZES, dtype=torch.float32)).all())
    assert set(batch['targets'].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(next(queue)['inputs'], batch['inputs'])


def test_real_queue_asks_the_reader_for_this_ranks_slice(monkeypatch):
    import types

    import numpy as np

    import workloads.criteo1tb as package

    calls = []

    def get_criteo1tb_dataset(**kwargs):
        calls.append(kwargs)
        yield {'inputs': np.ones((4, 39), np.float32), 'targets': np.zeros(4, np.float32)}
        yield {
            'inputs': np.ones((4, 39), np.float32),
            'targets': np.zeros(4, np.float32),
            'weights': np.array([1, 1, 0, 0], np.float32),
        }

    fake = types.ModuleType('workloads.criteo1tb.input_pipeline')
    fake.get_criteo1tb_dataset = get_criteo1tb_dataset
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setattr(package, 'input_pipeline', fake, raising=False)
    runtime = Runtime(torch.device('cpu'), rank=1, world_size=2, launched_distributed=True)
    wl = criteo.Criteo1TbDlrmSmallTestWorkload(runtime=runtime)
    queue = wl._build_input_queue([3, 4], 'validation', '/data', 8, num_batches=2,
                                  repeat_final_dataset=True)  # fmt: skip
    first, second = next(queue), next(queue)
    assert calls == [{
        'split': 'validation', 'data_dir': '/data', 'data_rng': [3, 4], 'global_batch_size': 8,
        'num_batches': 2, 'repeat_final_dataset': True, 'rank': 1, 'world_size': 2,
    }]  # fmt: skip
    assert first['inputs'].dtype == torch.float32 and first['targets'].shape == (4,)
    assert first['weights'].tolist() == [1.0] * 4  # Upstream's all-ones default.
    assert second['weights'].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_validate_data_dir(tmp_path):
    wl = _workload('criteo1tb_test')
    with pytest.raises(FileNotFoundError, match='directory not found'):
        wl.validate_data_dir(str(tmp_path / 'nope'))
    with pytest.raises(FileNotFoundError, match='no Criteo 1TB files'):
        wl.validate_data_dir(str(tmp_path))
    (tmp_path / 'day_0_00').write_text('')
    wl.validate_data_dir(str(tmp_path))


def test_eval_is_the_float64_sum_over_examples():
    wl = _workload('criteo1tb_test')
    model, _ = wl.init_model_fn([0, 0])
    wl._build_input_queue = lambda rng, split, data_dir, bs, **kw: wl._build_synthetic_input_queue(
        rng, split, bs
    )
    result = wl._eval_model_on_split('validation', 300, 128, model, None, [1, 1], '')
    batches = wl._build_synthetic_input_queue([1, 1], 'validation', 128)
    total = 0.0
    for _ in range(3):  # ceil(300 / 128) batches, as upstream.
        batch = next(batches)
        logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
        total += wl.loss_fn(batch['targets'], logits, batch['weights'])['summed'].double().item()
    assert set(result) == {'loss'}
    assert result['loss'] == pytest.approx(total / 300, rel=1e-12)


def test_nadamw_baseline_lowers_the_loss_on_synthetic_batches():
    from submissions.baselines.nadamw import submission as nadamw

    wl = _workload('criteo1tb_test')
    model, state = wl.init_model_fn([0, 0])
    # Upstream's self-tuning point with a 10-step warmup (0.001 * step_hint) instead of 213.
    hp = nadamw.SELF_TUNING_HPARAMS._replace(warmup_factor=0.001)
    opt = nadamw.init_optimizer_state(wl, model, state, hp, [0, 0])
    queue = wl._build_synthetic_input_queue([0, 1], 'train', 128)
    pool = [next(queue) for _ in range(4)]  # The queue cycles these 4 batches.

    def train_loss():
        summed = n_valid = 0.0
        for batch in pool:
            logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
            out = wl.loss_fn(batch['targets'], logits, batch['weights'])
            summed += out['summed'].item()
            n_valid += out['n_valid_examples'].item()
        return summed / n_valid

    before = train_loss()
    for step in range(16):
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, hp, next(queue), wl.loss_type, opt, [],
            step, [0, step],
        )  # fmt: skip
    after = train_loss()
    # Labels are random, so this is fitting the 512 examples: measured 0.166 -> 0.089.
    assert math.isfinite(after) and after < 0.8 * before, (before, after)


def test_real_reader_on_fixture_files_trains_and_evaluates(tmp_path):
    fixture = pytest.importorskip('workloads.criteo1tb.fixture')
    pytest.importorskip('workloads.criteo1tb.input_pipeline')
    from submissions.baselines.nadamw import submission as nadamw

    fixture.write_criteo_fixture(str(tmp_path), lines_per_file=300)
    wl = _workload('criteo1tb_test')
    wl.validate_data_dir(str(tmp_path))
    model, state = wl.init_model_fn([0, 0])
    hp = nadamw.SELF_TUNING_HPARAMS._replace(warmup_factor=0.001)
    opt = nadamw.init_optimizer_state(wl, model, state, hp, [0, 0])
    train = wl._build_input_queue([0, 1], 'train', str(tmp_path), 128)
    for step in range(3):
        batch = next(train)
        assert batch['inputs'].shape == (128, 39) and batch['weights'].shape == (128,)
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, hp, batch, wl.loss_type, opt, [], step,
            [0, step],
        )  # fmt: skip
    # Validation = day_23_19 + day_23_35 = 600 lines: 3 batches of 256, the last padded
    # with 168 weight-0 rows that must not count.
    result = wl._eval_model_on_split('validation', 600, 256, model, None, [2, 2], str(tmp_path))
    rows = wl._build_input_queue([2, 2], 'validation', str(tmp_path), 256, num_batches=3)
    batches = [next(rows) for _ in range(3)]
    assert [int(b['weights'].sum()) for b in batches] == [256, 256, 88]
    inputs = torch.cat([b['inputs'] for b in batches])[:600]
    targets = torch.cat([b['targets'] for b in batches])[:600]
    with torch.no_grad():
        model.eval()
        logits = model(inputs)[:, 0]
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction='sum') / 600
    assert result['loss'] == pytest.approx(expected.item(), rel=1e-5)


def test_synthetic_ids_use_the_readers_vocab_sizes():
    criteo_tsv = pytest.importorskip('kernels.criteo_tsv')
    assert tuple(criteo.RAW_VOCAB_SIZES) == tuple(criteo_tsv.VOCAB_SIZES)


@pytest.mark.gpu
def test_full_size_model_steps_on_cuda():
    from submissions.baselines.nadamw import submission as nadamw

    wl = registry.get_workload('criteo1tb', runtime=Runtime(torch.device('cuda', 0)))
    model, state = wl.init_model_fn([0, 0])
    assert sum(p.numel() for p in model.parameters()) == 539_267_457
    opt = nadamw.init_optimizer_state(wl, model, state, None, [0, 0])
    queue = wl._build_synthetic_input_queue([0, 1], 'train', 8192)
    for step in range(2):
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, None, next(queue), wl.loss_type, opt, [],
            step, [0, step],
        )  # fmt: skip
    batch = next(wl._build_synthetic_input_queue([3, 3], 'validation', 8192))
    logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
    with torch.no_grad():
        model.embedding_lookup = criteo.models._concat_lookup
        reference = model(batch['inputs'])
        model.embedding_lookup = None
    assert logits.is_cuda and bool(logits.isfinite().all())
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)
