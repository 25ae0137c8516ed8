"""The straightforward reader: upstream's per-graph path, one Python object per graph.

A direct port of upstream's `_to_jraph`, `jraph.dynamically_batch`, `jraph.pad_with_graphs`
and `_get_weights_by_nan_and_padding` (spec §6.7) without TF or jraph: every graph
becomes a dict of small arrays, batches are concatenations of them. It is the parity
reference of `input_pipeline.materialize`/`pack` (tests) and the peer of its benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from workloads.ogbg.input_pipeline import GraphSplit, batch_budgets


def to_graph(split: GraphSplit, i: int) -> dict:
    """Graph `i` as upstream's `_to_jraph` builds it (bidirectional edges, labels as globals)."""
    n0, n1 = split.node_offsets[i], split.node_offsets[i + 1]
    e0, e1 = split.edge_offsets[i], split.edge_offsets[i + 1]
    edge_index = np.asarray(split.edge_index[e0:e1], dtype=np.int64)
    edge_feat = np.asarray(split.edge_feat[e0:e1], dtype=np.float32)
    senders, receivers = edge_index[:, 0], edge_index[:, 1]
    labels = split.labels[i].astype(np.float32)
    labels[split.labels[i] < 0] = np.nan  # The release's missing labels.
    return {
        'n_node': np.array([n1 - n0]),
        'n_edge': np.array([2 * (e1 - e0)]),
        'nodes': np.asarray(split.node_feat[n0:n1], dtype=np.float32),
        'edges': np.concatenate([edge_feat, edge_feat]),
        'senders': np.concatenate([senders, receivers]),
        'receivers': np.concatenate([receivers, senders]),
        'globals': labels[None],
    }


def _batch(graphs: list[dict]) -> dict:
    """jraph.batch: concatenate, offsetting each graph's node indices."""
    offsets = np.cumsum([0] + [int(g['n_node'].sum()) for g in graphs[:-1]])
    out = {
        k: np.concatenate([g[k] for g in graphs])
        for k in ('n_node', 'n_edge', 'nodes', 'edges', 'globals')
    }
    for key in ('senders', 'receivers'):
        out[key] = np.concatenate([g[key] + o for g, o in zip(graphs, offsets)])
    return out


def _pad(batch: dict, n_node: int, n_edge: int, n_graph: int) -> dict:
    """jraph.pad_with_graphs: one graph with all padding nodes/edges, then empty graphs."""
    pad_nodes = n_node - int(batch['n_node'].sum())
    pad_edges = n_edge - int(batch['n_edge'].sum())
    pad_graphs = n_graph - len(batch['n_node'])
    padding = {
        'n_node': np.concatenate([[pad_nodes], np.zeros(pad_graphs - 1, dtype=np.int64)]),
        'n_edge': np.concatenate([[pad_edges], np.zeros(pad_graphs - 1, dtype=np.int64)]),
        'nodes': np.zeros((pad_nodes, batch['nodes'].shape[1]), np.float32),
        'edges': np.zeros((pad_edges, batch['edges'].shape[1]), np.float32),
        'globals': np.zeros((pad_graphs, batch['globals'].shape[1]), np.float32),
        'senders': np.zeros(pad_edges, dtype=np.int64),
        'receivers': np.zeros(pad_edges, dtype=np.int64),
    }
    return _batch([batch, padding])


def dynamically_batch(graphs: Iterable[dict], per_device_batch_size: int) -> Iterator[dict]:
    """Upstream's batches of a graph stream: jraph's greedy packing, padding and label masks."""
    n_node, n_edge, n_graph = batch_budgets(per_device_batch_size)

    def emit(accumulated):
        batch = _pad(_batch(accumulated), n_node, n_edge, n_graph)
        labels = batch.pop('globals')
        real = np.zeros(n_graph, dtype=bool)
        real[: len(accumulated)] = True  # jraph.get_graph_padding_mask
        nan = np.isnan(labels)
        batch['targets'] = np.where(nan, 0.0, labels).astype(np.float32)
        batch['weights'] = ~nan & real[:, None]
        return batch

    accumulated, nodes, edges = [], 0, 0
    for g in graphs:
        gn, ge = int(g['n_node'].sum()), int(g['n_edge'].sum())
        if gn > n_node - 1 or ge > n_edge:
            raise RuntimeError('Found graph bigger than batch size.')
        if accumulated and (
            len(accumulated) + 1 > n_graph - 1 or nodes + gn > n_node - 1 or edges + ge > n_edge
        ):
            yield emit(accumulated)
            accumulated, nodes, edges = [], 0, 0
        accumulated.append(g)
        nodes, edges = nodes + gn, edges + ge
    if accumulated:
        yield emit(accumulated)
