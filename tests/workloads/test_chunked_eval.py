"""Memory-bounded evaluation and evals that stop at the data present (issues #16.3, #18.6).

An eval batch larger than `eval_examples_per_forward()` is evaluated in slices (plain
batches) or packed as smaller batches of the same examples (ogbg): the eval's results
must equal the unchunked eval's up to float summation order. A split holding fewer
examples than the spec's count is read once (not cycled), divided by the examples read,
and `<split>/num_examples` records that number with one warning.
"""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from algoperf import cli, registry, spec
from algoperf.runtime import Runtime
from algoperf.workload_base import EVAL_MAX_EXAMPLES_ENV, SpecWorkload

CPU = Runtime(torch.device('cpu'))
# Sums of a few hundred float32 terms in another order: ~1e-6 relative.
SUM_ORDER = dict(rel=1e-5, abs=1e-7)


def _forward_sizes(wl, size_of):
    """Wraps `wl.model_fn`, recording the number of examples of each eval forward."""
    sizes, model_fn = [], wl.model_fn

    def recording(params, batch, *args, **kwargs):
        sizes.append(size_of(batch))
        return model_fn(params, batch, *args, **kwargs)

    wl.model_fn = recording
    return sizes


# ---- the cap ----------------------------------------------------------------------------------
def test_cap_from_env_attribute_and_memory_budget(monkeypatch):
    wl = registry.get_workload('ogbg', runtime=CPU)
    monkeypatch.delenv(EVAL_MAX_EXAMPLES_ENV, raising=False)
    monkeypatch.delenv('ALGOPERF_EVAL_MEMORY_MB', raising=False)
    # Default: 4 GiB on CPU over the workload's bytes per example.
    assert wl.eval_examples_per_forward() == (4 << 30) // wl.eval_bytes_per_example
    monkeypatch.setenv('ALGOPERF_EVAL_MEMORY_MB', '60')
    assert wl.eval_examples_per_forward() == (60 << 20) // wl.eval_bytes_per_example
    wl.eval_max_examples_per_forward = 7
    assert wl.eval_examples_per_forward() == 7
    monkeypatch.setenv(EVAL_MAX_EXAMPLES_ENV, '3')
    assert wl.eval_examples_per_forward() == 3
    monkeypatch.setenv(EVAL_MAX_EXAMPLES_ENV, 'x')
    with pytest.raises(ValueError, match=EVAL_MAX_EXAMPLES_ENV):
        wl.eval_examples_per_forward()


def test_every_benchmark_workload_bounds_its_eval_batch():
    # Upstream's eval batches that do not fit a 24 GB CPU at once get a finite per-forward cap
    # below the eval batch (per device); the default budget is 4 GiB.
    for name in ('ogbg', 'fastmri', 'imagenet_resnet', 'imagenet_vit', 'librispeech_conformer',
                 'librispeech_deepspeech', 'wmt'):
        wl = registry.get_workload(name, runtime=CPU)
        cap = wl.eval_examples_per_forward()
        assert cap is not None and 1 <= cap, name
        assert cap * wl.eval_bytes_per_example <= 4 << 30, name
        if name in ('ogbg', 'fastmri', 'imagenet_resnet', 'imagenet_vit', 'librispeech_conformer'):
            assert cap < wl.eval_batch_size, name


def test_eval_in_chunks_adds_the_slices_sums_of_nested_batches():
    wl = registry.get_workload('digits', runtime=CPU)
    wl.eval_max_examples_per_forward = 3
    batch = {'inputs': (torch.arange(10.0), torch.ones(10)), 'targets': torch.arange(10) % 2}
    sizes = []

    def sums(b):
        sizes.append(len(b['targets']))
        return {'x': b['inputs'][0].sum(), 'n': b['inputs'][1].sum(), 't': b['targets'].sum()}

    out = wl._eval_in_chunks(sums, batch)
    assert sizes == [3, 3, 3, 1]
    assert {k: v.item() for k, v in out.items()} == {'x': 45.0, 'n': 10.0, 't': 5}


# ---- ogbg: the same graphs packed into smaller batches ---------------------------------------
@pytest.fixture(scope='module')
def ogbg_data(tmp_path_factory):
    from workloads.ogbg.fixture import write_ogbg_fixture

    root = tmp_path_factory.mktemp('ogbg_chunked')
    write_ogbg_fixture(str(root / 'raw'), seed=5, num_graphs=300)
    assert cli.main(['data', 'ogbg', f'--raw_dir={root / "raw"}', f'--data_dir={root / "data"}']) == 0
    return str(root / 'data')


def _small_ogbg():
    from workloads.ogbg import models

    wl = registry.get_workload('ogbg', runtime=CPU)
    wl._build_model = lambda: models.GNN(latent_dim=16, hidden_dims=(16,), num_message_passing_steps=2)
    return wl


def test_ogbg_chunked_eval_equals_the_unchunked_one(ogbg_data):
    from workloads.ogbg import input_pipeline as ip

    num_graphs = len(ip.load_split(ogbg_data, 'validation'))
    results, passes, biggest = [], [], []
    for cap in (None, 8):
        wl = _small_ogbg()
        model, _ = wl.init_model_fn([0, 0])
        wl.eval_max_examples_per_forward = cap
        sizes = _forward_sizes(wl, lambda b: int((b['inputs'].n_node > 0).sum()))
        results.append(wl._eval_model_on_split('validation', num_graphs, 64, model, None, [1, 1], ogbg_data))
        passes.append(wl._eval_iters['validation'].batches_per_pass)
        biggest.append(max(sizes))
    unchunked, chunked = results
    assert passes[1] >= 3 * passes[0]  # Several smaller packed batches per global batch.
    assert biggest[1] <= 8 + 1 < biggest[0]  # At most 8 graphs (+ the padding graph) per forward.
    for key in ('accuracy', 'loss', 'mean_average_precision'):
        assert chunked[key] == pytest.approx(unchunked[key], **SUM_ORDER), key


def test_ogbg_logs_the_graphs_present_not_the_spec_count(ogbg_data, caplog):
    from workloads.ogbg import input_pipeline as ip

    wl = _small_ogbg()
    model, _ = wl.init_model_fn([0, 0])
    with caplog.at_level(logging.WARNING, logger='algoperf.workload_base'):
        metrics = wl.eval_model(64, model, None, [1, 1], ogbg_data, None, 0)
        again = wl.eval_model(64, model, None, [1, 1], ogbg_data, None, 0)
    for split in ('validation', 'test'):
        present = len(ip.load_split(ogbg_data, split))
        assert present < wl.workload_spec.num_validation_examples
        assert metrics[f'{split}/num_examples'] == again[f'{split}/num_examples'] == present
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One line per split (eval_train, validation, test), not one per eval.
    assert len(warnings) == 3 and all('fewer than' in w for w in warnings), warnings


def test_ogbg_synthetic_eval_packs_each_global_batch_as_several():
    wl = registry.get_workload('ogbg', runtime=CPU)
    wl.eval_max_examples_per_forward = 16
    queue = wl._build_synthetic_input_queue([0, 0], 'validation', 64)
    assert queue.batches_per_global_batch == 4
    assert int(next(queue)['inputs'].n_node.shape[0]) == 17
    assert len(list(SpecWorkload._one_pass(queue, 100, 64))) == 2 * 4


# ---- fastMRI: slices of the eval batch --------------------------------------------------------
@pytest.fixture(scope='module')
def fastmri_data(tmp_path_factory):
    from workloads.fastmri.fixture import write_fastmri_fixture

    root = tmp_path_factory.mktemp('fastmri_chunked')
    write_fastmri_fixture(str(root), seed=2, num_train=1, num_val=2, slices=[2, 5, 4])
    return str(root)


def _small_fastmri():
    from workloads.fastmri import models

    wl = registry.get_workload('fastmri', runtime=CPU)
    wl._build_model = lambda: models.UNet(num_channels=4, num_pool_layers=2)
    return wl


def test_fastmri_chunked_eval_equals_the_unchunked_one(fastmri_data):
    results, biggest = [], []
    for cap in (None, 2):
        wl = _small_fastmri()
        model, _ = wl.init_model_fn([0, 0])
        wl.eval_max_examples_per_forward = cap
        sizes = _forward_sizes(wl, lambda b: len(b['inputs']))
        # 9 slices in batches of 8: the second one padded with 7 weight-0 slices.
        results.append(wl._eval_model_on_split('validation', 9, 8, model, None, [1, 1], fastmri_data))
        biggest.append(max(sizes))
    assert biggest == [8, 2]
    for key in ('ssim', 'loss'):
        assert results[1][key] == pytest.approx(results[0][key], **SUM_ORDER), key


def test_fastmri_eval_reads_a_small_split_once(fastmri_data, caplog):
    wl = _small_fastmri()
    model, _ = wl.init_model_fn([0, 0])
    sizes = _forward_sizes(wl, lambda b: len(b['inputs']))
    spec_count = wl.workload_spec.num_validation_examples  # 3,554 slices; the fixture has 9.
    with caplog.at_level(logging.WARNING, logger='algoperf.workload_base'):
        small = wl._eval_model_on_split('validation', spec_count, 8, model, None, [1, 1], fastmri_data)
    assert len(sizes) == 2  # ceil(9 / 8) batches, not ceil(3,554 / 8) = 445.
    wl2 = _small_fastmri()
    model2, _ = wl2.init_model_fn([0, 0])
    exact = wl2._eval_model_on_split('validation', 9, 8, model2, None, [1, 1], fastmri_data)
    assert small == pytest.approx(exact, rel=1e-6)  # Divided by the 9 slices read.
    assert any('fewer than' in r.getMessage() for r in caplog.records)


# ---- Criteo: the fixture eval finishes ---------------------------------------------------------
def test_criteo_fixture_eval_stops_at_the_data_and_records_its_count(tmp_path):
    fixture = pytest.importorskip('workloads.criteo1tb.fixture')
    pytest.importorskip('workloads.criteo1tb.input_pipeline')
    fixture.write_criteo_fixture(str(tmp_path), lines_per_file=300)
    wl = registry.get_workload('criteo1tb_test', runtime=CPU)
    model, _ = wl.init_model_fn([0, 0])
    forward = wl.model_fn
    calls = []

    def bounded(*args, **kwargs):
        calls.append(1)
        if len(calls) > 50:  # Before this change: ceil(83M / 256) cycled batches (hours).
            raise AssertionError('the eval cycles the fixture instead of stopping at it')
        return forward(*args, **kwargs)

    wl.model_fn = bounded
    full = wl.workload_spec.num_validation_examples
    result = wl._eval_model_on_split('validation', full, 256, model, None, [2, 2], str(tmp_path))
    assert len(calls) == 3  # 600 validation lines (day_23_19 and day_23_35) in batches of 256.
    rows = wl._build_input_queue([2, 2], 'validation', str(tmp_path), 256, num_batches=3)
    batches = list(rows)
    inputs = torch.cat([b['inputs'] for b in batches])[:600]
    targets = torch.cat([b['targets'] for b in batches])[:600]
    with torch.no_grad():
        model.eval()
        logits = model(inputs)[:, 0]
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction='sum') / 600
    assert result['loss'] == pytest.approx(expected.item(), rel=1e-5)
    assert wl.__dict__['_eval_example_counts']['validation'] == 600


# ---- in-memory workloads: full datasets keep upstream's counts ---------------------------------
def test_digits_full_split_counts_are_the_specs():
    wl = registry.get_workload('digits', runtime=CPU)
    model, _ = wl.init_model_fn([0, 0])
    wl.eval_max_examples_per_forward = 5
    metrics = wl.eval_model(64, model, None, [0, 0], '', None, 0)
    assert metrics['validation/num_examples'] == wl.num_validation_examples
    assert metrics['test/num_examples'] == wl.num_test_examples
    wl2 = registry.get_workload('digits', runtime=CPU)
    model2, _ = wl2.init_model_fn([0, 0])
    unchunked = wl2.eval_model(64, model2, None, [0, 0], '', None, 0)
    assert metrics == pytest.approx(unchunked, rel=1e-6)
    assert math.isfinite(metrics['validation/loss'])


def test_eval_model_keeps_spec_counts_for_synthetic_queues():
    wl = registry.get_workload('criteo1tb_test', runtime=CPU)
    model, _ = wl.init_model_fn([0, 0])
    wl._build_input_queue = lambda rng, split, data_dir, bs, **kw: wl._build_synthetic_input_queue(
        rng, split, bs
    )
    # 300 examples in whole synthetic batches of 128 (384 rows): divided by 300, as upstream.
    result = wl._eval_model_on_split('validation', 300, 128, model, None, [1, 1], '')
    batches = wl._build_synthetic_input_queue([1, 1], 'validation', 128)
    total = 0.0
    for _ in range(3):
        batch = next(batches)
        logits, _ = wl.model_fn(model, batch, None, spec.ForwardPassMode.EVAL, None, False)
        total += wl.loss_fn(batch['targets'], logits, batch['weights'])['summed'].double().item()
    assert result['loss'] == pytest.approx(total / 300, rel=1e-12)


def test_cifar_eval_of_a_small_split_reads_it_once():
    """A split smaller than the spec's count is not cycled (#18): the pass is the data present."""
    import torch

    from algoperf.workload_base import SpecWorkload
    from workloads.cifar import input_pipeline

    images = torch.zeros(70, 3, 32, 32, dtype=torch.uint8)
    labels = torch.arange(70) % 10
    stream = input_pipeline.eval_stream(images, labels, global_batch_size=32, rank=0, world_size=1)
    batches = list(SpecWorkload._one_pass(stream, num_examples=10_000, global_batch_size=32))
    assert len(batches) == 3  # ceil(70 / 32), not ceil(10,000 / 32) = 313.
    assert sum(float(b['weights'].sum()) for b in batches) == 70
    # The stream still repeats for the next eval (upstream caches and repeats eval iterators).
    assert float(next(stream)['weights'].sum()) == 32
