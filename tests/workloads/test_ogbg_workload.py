"""OGBG workload API: loss and mAP against independent references, batches, eval, training, data dir.

References: `torch.nn.functional.binary_cross_entropy_with_logits` for the loss and
`sklearn.metrics.average_precision_score` for average precision.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algoperf import registry, spec
from algoperf.runtime import Runtime
from workloads.ogbg import metrics, models
from workloads.ogbg import workload as ogbg

sklearn_metrics = pytest.importorskip('sklearn.metrics')
CPU = Runtime(torch.device('cpu'))


def _workload(name='ogbg'):
    return registry.get_workload(name, runtime=CPU)


# ---- loss --------------------------------------------------------------------------------------
@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_loss_fn_is_masked_smoothed_sigmoid_bce(label_smoothing):
    g = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(5, 128, generator=g, dtype=torch.float64)
    labels = (torch.rand(5, 128, generator=g) < 0.3).double()
    mask = torch.rand(5, 128, generator=g) < 0.6
    out = _workload().loss_fn(labels, logits, mask, label_smoothing=label_smoothing)
    smoothed = (1 - label_smoothing) * labels + label_smoothing / 128
    expected = F.binary_cross_entropy_with_logits(logits, smoothed, reduction='none') * mask
    torch.testing.assert_close(out['per_example'], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out['summed'], expected.sum(), rtol=1e-12, atol=1e-12)
    assert out['n_valid_examples'].item() == int(mask.sum())
    unmasked = _workload().loss_fn(labels, logits)
    assert unmasked['n_valid_examples'].item() == 5 * 128


def test_loss_has_no_nan_gradient_from_masked_labels():
    logits = torch.zeros(2, 128, requires_grad=True)
    labels = torch.full((2, 128), float('nan'))
    labels[0] = 1.0
    mask = torch.zeros(2, 128, dtype=torch.bool)
    mask[0] = True
    _workload().loss_fn(labels, logits, mask)['summed'].backward()
    assert bool(torch.isfinite(logits.grad).all()) and bool((logits.grad[1] == 0).all())


# ---- average precision -------------------------------------------------------------------------
@pytest.mark.parametrize('n', [1, 2, 7, 300])
def test_average_precision_matches_sklearn_including_ties(n):
    rng = np.random.default_rng(n)
    for decimals in (1, 6):  # Many ties, then few.
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        scores = np.round(rng.random(n), decimals)
        expected = sklearn_metrics.average_precision_score(labels, scores)
        assert metrics.average_precision(labels, scores) == pytest.approx(expected, rel=1e-12)


def _upstream_map(labels, logits, mask):
    """Upstream's MeanAveragePrecision.compute, with sklearn."""
    mask = mask.astype(bool)
    probs = 1 / (1 + np.exp(-logits.astype(np.float32)))
    aps = np.full(labels.shape[1], np.nan)
    for t in range(labels.shape[1]):
        if np.sum(labels[:, t] == 0) > 0 and np.sum(labels[:, t] == 1) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # A task with no valid positive.
                aps[t] = sklearn_metrics.average_precision_score(
                    labels[mask[:, t], t], probs[mask[:, t], t]
                )
    return np.nan if np.isnan(aps).all() else np.nanmean(aps)


def test_mean_average_precision_matches_upstream_with_sklearn():
    rng = np.random.default_rng(0)
    labels = (rng.random((400, 128)) < 0.05).astype(np.float32)
    mask = rng.random((400, 128)) < 0.5
    labels[:, 0] = 0  # No positives: not eligible.
    labels[:, 1] = 1  # No negatives: not eligible.
    labels[:, 2] = mask[:, 2]  # Valid labels all positive: eligible upstream (AP 1).
    logits = (rng.normal(size=(400, 128)) * 4 + 3 * labels).astype(np.float32)
    got = metrics.mean_average_precision(labels, logits, mask)
    assert got == pytest.approx(_upstream_map(labels, logits, mask), rel=1e-12)
    assert math.isnan(metrics.mean_average_precision(labels[:, :2], logits[:, :2], mask[:, :2]))


# ---- synthetic batches -------------------------------------------------------------------------
def test_synthetic_batches_follow_upstreams_padding():
    runtime = Runtime(torch.device('cpu'), rank=1, world_size=2, launched_distributed=True)
    wl = ogbg.OgbgWorkload(runtime=runtime)
    queue = wl._build_synthetic_input_queue([5, 6], 'train', 64)
    batch = next(queue)
    graph, n = batch['inputs'], 32
    assert isinstance(graph, models.GraphsTuple) and graph.globals is None
    assert ogbg.batch_budgets(n) == (26 * n + 1, 56 * n, n + 1)
    assert graph.nodes.shape == (26 * n + 1, 9) and graph.edges.shape == (56 * n, 3)
    assert graph.n_node.shape == graph.n_edge.shape == (n + 1,)
    assert int(graph.n_node.sum()) == 26 * n + 1 and int(graph.n_edge.sum()) == 56 * n
    assert batch['targets'].shape == batch['weights'].shape == (n + 1, 128)
    assert batch['targets'].dtype == torch.float32 and batch['weights'].dtype == torch.bool
    for t in (graph.senders, graph.receivers, graph.n_node, graph.n_edge):
        assert t.dtype == torch.int64
    # Real graphs first (weights > 0), then the padding graph with every padding node.
    real = int(batch['weights'].any(dim=1).sum())
    assert 0 < real <= n and int(graph.n_node[real]) >= 1
    assert not bool(batch['weights'][real:].any()) and not bool(batch['targets'][real:].any())
    node_graph = models.graph_index(graph.n_node, graph.nodes.shape[0])
    edge_graph = models.graph_index(graph.n_edge, graph.edges.shape[0])
    assert torch.equal(node_graph[graph.senders], edge_graph)  # Edges stay in their graph.
    assert torch.equal(node_graph[graph.receivers], edge_graph)
    pad_nodes = node_graph >= real
    assert not bool(graph.nodes[pad_nodes].any())
    # Bidirectional: each real graph's second half of edges reverses its first half.
    e0, e1 = int(graph.n_edge[0]) // 2, int(graph.n_edge[0])
    assert torch.equal(graph.senders[:e0], graph.receivers[e0:e1])
    assert not torch.equal(next(queue)['inputs'].nodes, graph.nodes)


# ---- workload API, eval, training --------------------------------------------------------------
def test_init_model_fn_sets_the_trees_and_is_seeded():
    wl = _workload()
    model, state = wl.init_model_fn([7, 1])
    assert state is None and sum(p.numel() for p in model.parameters()) == 3_554_176
    again, _ = _workload().init_model_fn([7, 2])
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)  # Only rng[0] seeds, as upstream.
    assert wl.is_output_params('decoder.weight') and not wl.is_output_params('node_embedder.weight')
    assert wl.target_metric_name == 'mean_average_precision'
    assert wl.loss_type == spec.LossType.SOFTMAX_CROSS_ENTROPY  # Upstream's declared value.
    with pytest.raises(ValueError, match='model_state'):
        wl.model_fn(model, {}, {}, spec.ForwardPassMode.EVAL, None, False)


def _small_workload():
    wl = _workload()
    wl._build_model = lambda: models.GNN(
        latent_dim=32, hidden_dims=(32,), num_message_passing_steps=2
    )
    return wl


def test_eval_metrics_over_batches():
    wl = _small_workload()
    model, _ = wl.init_model_fn([0, 0])
    pool = [next(wl._build_synthetic_input_queue([s, 0], 'validation', 8)) for s in (1, 2)]
    wl._build_input_queue = lambda *a, **kw: iter(pool)
    result = wl._eval_model_on_split('validation', 16, 8, model, None, [1, 1], '')
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(b['inputs']) for b in pool])
    labels = torch.cat([b['targets'] for b in pool])
    mask = torch.cat([b['weights'] for b in pool])
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction='none')
    assert set(result) == {'accuracy', 'loss', 'mean_average_precision'}
    assert result['loss'] == pytest.approx(losses[mask].mean().item(), rel=1e-5)
    assert result['accuracy'] == pytest.approx(
        ((logits > 0) == (labels > 0))[mask].float().mean().item()
    )
    expected_map = _upstream_map(labels.numpy(), logits.numpy(), mask.numpy())
    assert result['mean_average_precision'] == pytest.approx(expected_map, rel=1e-9)


def test_nadamw_baseline_lowers_the_loss_on_synthetic_batches():
    from submissions.baselines.nadamw import submission as nadamw

    wl = _small_workload()
    model, state = wl.init_model_fn([0, 0])
    hp = nadamw.SELF_TUNING_HPARAMS._replace(warmup_factor=0.001)
    opt = nadamw.init_optimizer_state(wl, model, state, hp, [0, 0])
    queue = wl._build_synthetic_input_queue([0, 1], 'train', 16)
    pool = [next(queue) for _ in range(4)]

    def train_loss():
        with torch.no_grad():
            total, count = 0.0, 0
            for b in pool:
                out, _ = wl.model_fn(model, b, None, spec.ForwardPassMode.EVAL, None, False)
                loss = wl.loss_fn(b['targets'], out, b['weights'])
                total, count = (
                    total + loss['summed'].item(),
                    count + loss['n_valid_examples'].item(),
                )
            return total / count

    before = train_loss()
    for step in range(30):
        opt, model, state = nadamw.update_params(
            wl, model, wl.model_params_types, state, hp, next(queue), wl.loss_type, opt, [],
            step, [0, step],
        )  # fmt: skip
    after = train_loss()
    assert math.isfinite(after) and after < 0.85 * before, (before, after)


def test_missing_data_fails_early_with_nothing_written(tmp_path, capsys):
    from algoperf import cli

    code = cli.main([
        'run', '--workload=ogbg', f'--data_dir={tmp_path}', '--tuning_ruleset=self',
        '--submission_path=submissions/baselines/nadamw/submission.py', f'--experiment_dir={tmp_path / "exp"}',
        '--experiment_name=x', '--noprogress',
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / 'ogbg_molpcba' / 'format.json') in err and 'algoperf data ogbg' in err
    assert not (tmp_path / 'exp').exists()  # Nothing written.
    with pytest.raises(FileNotFoundError):
        _workload('ogbg_silu')._build_input_queue([0, 0], 'train', str(tmp_path), 8)
