"""One ogbg GNN training step: our model (eager, compiled) vs upstream's message passing.

Run (from the repository root, on a quiet machine; the compiled provider first spends
~1-2 minutes compiling, in its warm-up round)::

    python -m pytest benchmarks/workloads/bench_ogbg_step.py \
        --benchmark-json=benchmarks/results/ogbg_step_<hw>_<yyyymmdd>.json

The base GNN (3,554,176 parameters; 5 message-passing steps, latent 256) on one padded
batch at per-device batch 128 (3,329 nodes, 7,168 directed edges, 129 graphs: upstream's
budgets; `workload.synthetic_batch`, molecule-sized graphs), dropout 0.1. One round =
``zero_grad()``, forward, the masked sigmoid cross-entropy summed over valid labels and
divided by their count, backward, one NAdamW step (the baseline's optimizer).

Providers (same weights, same batch):
    ours: the model as the workload builds it: per-item graph indices from
        `searchsorted` (static shapes), sums with `index_add_`.
    ours_compiled: the same under `torch.compile` (possible because no shape depends on
        tensor values; upstream cannot compile its model, issue #495).
    plain (peer): upstream's `GraphNetwork.forward`: `repeat_interleave` broadcasts
        (value-dependent shapes) and torch_scatter-style `scatter_add_` sums over an
        expanded index.
"""

import types

import pytest
import torch
from _harness import rounds

from submissions.optimizers.nadamw import NAdamW
from workloads.ogbg import metrics, models
from workloads.ogbg.workload import synthetic_batch

BATCH = 128
ROUNDS = 10


def _scatter_sum(src, index, dim_size):
    """torch_scatter's scatter_sum as upstream vendors it: expand the index, scatter_add_."""
    index = index.view(-1, 1).expand_as(src)
    return src.new_zeros((dim_size, src.shape[1])).scatter_add_(0, index, src)


def _upstream_forward(self, graph, dropout_rate):
    """Upstream's GraphNetwork.forward (ogbg_pytorch/models.py), same concatenation order."""
    nodes, edges, receivers, senders, globals_, n_node, n_edge = graph
    num_nodes, n_graph = nodes.shape[0], n_node.shape[0]
    edge_inputs = torch.cat(
        [edges, nodes[senders], nodes[receivers], torch.repeat_interleave(globals_, n_edge, dim=0)],
        dim=-1,
    )
    edges = self.update_edge_fn(edge_inputs, dropout_rate)
    sent = _scatter_sum(edges, senders, num_nodes)
    received = _scatter_sum(edges, receivers, num_nodes)
    node_inputs = torch.cat(
        [nodes, sent, received, torch.repeat_interleave(globals_, n_node, dim=0)], dim=-1
    )
    nodes = self.update_node_fn(node_inputs, dropout_rate)
    graph_idx = torch.arange(n_graph, device=n_node.device)
    node_sums = _scatter_sum(nodes, torch.repeat_interleave(graph_idx, n_node), n_graph)
    edge_sums = _scatter_sum(edges, torch.repeat_interleave(graph_idx, n_edge), n_graph)
    globals_ = self.update_global_fn(
        torch.cat([node_sums, edge_sums, globals_], dim=-1), dropout_rate
    )
    return models.GraphsTuple(nodes, edges, receivers, senders, globals_, n_node, n_edge)


def _model(provider):
    torch.manual_seed(0)
    model = models.GNN()
    if provider == 'plain':
        for block in model.graph_network:
            block.forward = types.MethodType(_upstream_forward, block)
    if provider == 'ours_compiled':
        return model, torch.compile(model)
    return model, model


@pytest.mark.parametrize('provider', ['ours', 'ours_compiled', 'plain'])
def test_ogbg_train_step(benchmark, provider):
    model, forward = _model(provider)
    opt = NAdamW(model.parameters(), lr=1e-3, betas=(0.95, 0.998), weight_decay=0.08)
    batch = synthetic_batch(BATCH, torch.Generator().manual_seed(0))

    def step():
        opt.zero_grad()
        logits = forward(batch['inputs'], 0.1)
        losses = metrics.sigmoid_cross_entropy_with_mask(
            batch['targets'], logits, batch['weights'], 0.0
        )
        (losses.sum() / batch['weights'].sum()).backward()
        opt.step()

    benchmark.group = f'ogbg_step_b{BATCH}'
    benchmark.extra_info.update(device='cpu', peer='plain', items=BATCH, item_unit='graph')
    benchmark.pedantic(step, rounds=rounds(ROUNDS), warmup_rounds=2, iterations=1)
