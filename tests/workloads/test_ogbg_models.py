"""OGBG GNN: upstream's parameter counts, name/type trees, init, activations, forward and dropout.

The forward reference below is upstream's GraphNetwork math written with its own
primitives (`repeat_interleave` by the per-graph counts, `scatter_add_`), applied with
the model's weights, so the searchsorted/gather/index_add_ formulation is checked
against it, including empty padding graphs.
"""

import pytest
import torch
from torch import nn

from algoperf import param_utils, registry, spec
from algoperf.runtime import Runtime
from workloads.ogbg import models
from workloads.ogbg.workload import synthetic_batch

CPU = Runtime(torch.device('cpu'))
T = spec.ParameterType
NAMES = ('ogbg', 'ogbg_gelu', 'ogbg_silu', 'ogbg_model_size')
# Upstream's documented counts (spec §6.7); gelu/silu change no shapes.
PARAM_COUNTS = {
    'ogbg': 3_554_176,
    'ogbg_gelu': 3_554_176,
    'ogbg_silu': 3_554_176,
    'ogbg_model_size': 2_571_648,
}


def _workload(name):
    return registry.get_workload(name, runtime=CPU)


def _meta_model(name):
    with torch.device('meta'):
        return _workload(name)._build_model()


@pytest.mark.parametrize('name', NAMES)
def test_parameter_counts(name):
    assert sum(p.numel() for p in _meta_model(name).parameters()) == PARAM_COUNTS[name]


def _expected_tree(steps, hidden_dims):
    tree = {
        'node_embedder.weight': T.EMBEDDING,  # 'embed' in the name, as upstream types it.
        'node_embedder.bias': T.BIAS,
        'edge_embedder.weight': T.EMBEDDING,
        'edge_embedder.bias': T.BIAS,
    }
    for step in range(steps):
        for fn in ('update_edge_fn', 'update_node_fn', 'update_global_fn'):
            for i in range(len(hidden_dims)):
                prefix = f'graph_network.{step}.{fn}'
                tree[f'{prefix}.dense_{i}.weight'] = T.WEIGHT
                tree[f'{prefix}.dense_{i}.bias'] = T.BIAS
                tree[f'{prefix}.norm_{i}.weight'] = T.LAYER_NORM_SCALE
                tree[f'{prefix}.norm_{i}.bias'] = T.LAYER_NORM_BIAS
    tree['decoder.weight'] = T.WEIGHT
    tree['decoder.bias'] = T.BIAS
    return tree


@pytest.mark.parametrize('name', NAMES)
def test_parameter_type_tree_matches_upstream_names(name):
    wl = _workload(name)
    extra = wl.workload_spec.extra
    shapes = param_utils.pytorch_param_shapes(_meta_model(name))
    types = param_utils.pytorch_param_types(shapes)
    expected = _expected_tree(extra['num_message_passing_steps'], wl.hidden_dims)
    assert list(types.items()) == list(expected.items())
    latent, hidden = extra['latent_dim'], wl.hidden_dims[-1]
    assert tuple(shapes['node_embedder.weight'].shape_tuple) == (latent, 9)
    # First block: [edge, sender, receiver, zero globals of width 128].
    assert tuple(shapes['graph_network.0.update_edge_fn.dense_0.weight'].shape_tuple) == (
        wl.hidden_dims[0], 3 * latent + 128,
    )  # fmt: skip
    assert tuple(shapes['graph_network.1.update_global_fn.dense_0.weight'].shape_tuple) == (
        wl.hidden_dims[0], 3 * hidden,
    )  # fmt: skip
    assert tuple(shapes['decoder.weight'].shape_tuple) == (128, hidden)


def test_variant_activations_and_norms():
    acts = lambda m, t: sum(isinstance(x, t) for x in m.modules())
    base, gelu, silu = (_meta_model(n) for n in ('ogbg', 'ogbg_gelu', 'ogbg_silu'))
    assert acts(base, nn.ReLU) == 15 and acts(base, nn.GELU) == 0 and acts(base, nn.SiLU) == 0
    assert acts(gelu, nn.GELU) == 15 and acts(gelu, nn.ReLU) == 0
    assert all(m.approximate == 'tanh' for m in gelu.modules() if isinstance(m, nn.GELU))
    assert acts(silu, nn.SiLU) == 15 and acts(silu, nn.ReLU) == 0
    assert acts(_meta_model('ogbg_model_size'), nn.ReLU) == 3 * 3 * 2
    assert all(m.eps == 1e-6 for m in base.modules() if isinstance(m, nn.LayerNorm))
    with pytest.raises(ValueError, match='Invalid activation'):
        models.GNN(activation_fn_name='tanh')


def test_init_is_truncated_lecun_normal_and_seeded():
    torch.manual_seed(0)
    model = models.GNN()
    w = model.graph_network[1].update_edge_fn.dense_0.weight  # 1024 -> 256.
    std = (1.0 / 1024) ** 0.5 / 0.87962566103423978
    assert float(w.detach().abs().max()) <= 2 * std + 1e-7
    assert float(w.detach().std()) == pytest.approx((1.0 / 1024) ** 0.5, rel=0.02)
    assert bool((model.decoder.bias == 0).all())
    norm = model.graph_network[0].update_node_fn.norm_0
    assert bool((norm.weight == 1).all()) and bool((norm.bias == 0).all())
    torch.manual_seed(0)
    again = models.GNN()
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)


def _reference_forward(model, graph):
    """Upstream's GNN.forward / GraphNetwork.forward with upstream's primitives."""

    def scatter(src, index, size):
        out = torch.zeros(size, src.shape[1], dtype=src.dtype)
        return out.scatter_add_(0, index[:, None].expand_as(src), src)

    n_node, n_edge, senders, receivers = graph.n_node, graph.n_edge, graph.senders, graph.receivers
    n_graph = n_node.shape[0]
    nodes, edges = model.node_embedder(graph.nodes), model.edge_embedder(graph.edges)
    globals_ = torch.zeros(n_graph, model.num_outputs)
    for block in model.graph_network:
        edge_in = [
            edges,
            nodes[senders],
            nodes[receivers],
            torch.repeat_interleave(globals_, n_edge, dim=0),
        ]
        edges = block.update_edge_fn(torch.cat(edge_in, -1), 0.0)
        sent = scatter(edges, senders, nodes.shape[0])
        received = scatter(edges, receivers, nodes.shape[0])
        node_in = [nodes, sent, received, torch.repeat_interleave(globals_, n_node, dim=0)]
        nodes = block.update_node_fn(torch.cat(node_in, -1), 0.0)
        idx = torch.arange(n_graph)
        node_sums = scatter(nodes, torch.repeat_interleave(idx, n_node), n_graph)
        edge_sums = scatter(edges, torch.repeat_interleave(idx, n_edge), n_graph)
        globals_ = block.update_global_fn(torch.cat([node_sums, edge_sums, globals_], -1), 0.0)
    return model.decoder(globals_)


@pytest.mark.parametrize('name', ['ogbg', 'ogbg_model_size'])
def test_forward_matches_upstreams_formulation(name):
    torch.manual_seed(0)
    model = _workload(name)._build_model().eval()
    batch = synthetic_batch(6, torch.Generator().manual_seed(0))
    graph = batch['inputs']
    assert int((graph.n_node == 0).sum()) >= 1  # Empty padding graphs are exercised.
    with torch.no_grad():
        out = model(graph)
        expected = _reference_forward(model, graph)
    assert out.shape == (7, 128)  # n + 1 graphs.
    # Same math; only the summation order of scatter_add_ vs index_add_ may differ.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_graph_index_equals_repeat_interleave():
    counts = torch.tensor([0, 3, 0, 0, 2, 1, 0])
    expected = torch.repeat_interleave(torch.arange(7), counts)
    assert torch.equal(models.graph_index(counts, 6), expected)


def test_dropout_is_a_forward_argument():
    torch.manual_seed(0)
    model = models.GNN(latent_dim=16, hidden_dims=(16,), num_message_passing_steps=2)
    graph = synthetic_batch(3, torch.Generator().manual_seed(0))['inputs']
    model.train()
    torch.testing.assert_close(model(graph, dropout_rate=0.0), model(graph, 0.0), rtol=0, atol=0)
    assert not torch.equal(model(graph, dropout_rate=0.5), model(graph, dropout_rate=0.0))
    model.eval()  # No dropout in eval whatever the rate.
    torch.testing.assert_close(model(graph, dropout_rate=0.5), model(graph, 0.0), rtol=0, atol=0)


def test_dynamo_traces_the_forward_without_graph_breaks():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = models.GNN(latent_dim=16, hidden_dims=(16,), num_message_passing_steps=2).eval()
    graph = synthetic_batch(3, torch.Generator().manual_seed(0))['inputs']
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(graph, 0.0), model(graph, 0.0), rtol=0, atol=0)
