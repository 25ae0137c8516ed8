"""ogbg-molpcba reader: upstream's dynamic batching, built per rank as padded tensors.

Upstream (algoperf/workloads/ogbg/input_pipeline.py, spec §6.7) iterates TFDS records in
one process, turns every graph into a jraph `GraphsTuple`, packs them with
`jraph.dynamically_batch` and pickles the whole batch to every rank each step. Here the
split is a handful of `.npy` columns (`algoperf data ogbg` writes them from the OGB
release, see `convert.py`), every rank computes the same packing plan from the per-graph
node and edge counts alone (a few `searchsorted` calls per batch) and materialises only
its own batches, with vectorised gathers instead of one Python object per graph.

Kept from upstream:
    * Graphs as TFDS stores them (examples of a split in ascending OGB graph index), made
      bidirectional per graph: its bonds as given, then the same bonds reversed, edge
      features repeated (`_to_jraph`).
    * Packing: greedy in stream order, a batch closes at the first graph that does not fit
      in ``26n`` nodes, ``56n`` directed edges and ``n`` graphs (n the per-device batch
      size); then `jraph.pad_with_graphs` to ``26n + 1`` nodes, ``56n`` edges and ``n + 1``
      graphs: one padding graph holding every padding node and edge (edges point at its
      first node), then empty graphs. A graph larger than a whole batch is an error.
    * Labels: NaN -> 0 with weight False; padding graphs weight False.
    * Train: shuffled, repeated, batches run across epoch ends (``shuffle().repeat()``
      before batching). With W ranks, consecutive packed batches go to ranks 0..W-1, as
      upstream's shards of one global batch.
Deliberate differences:
    * Shuffle: a full permutation per epoch from ``default_rng([data_rng[0], epoch])``,
      not TF's file shuffle plus a 2^15 buffer (TF's bits are not reproducible without
      TF; a full permutation is the limit the buffer approximates).
    * Eval: each eval reads its split's first ``num_examples`` graphs exactly once
      (validation and test in order; eval_train a fixed shuffled subset of train). Upstream
      cycles a cached iterator for ``ceil(num_examples / batch)`` global batches, which on
      one device covers the split once, but with 8 devices drops the last partial global
      batch and repeats the first one (about 32k graphs twice and 11k never).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from algoperf.data_io import check_dtype, check_range, read_format_file
from algoperf.errors import DataError
from workloads.ogbg.models import EDGE_FEATURES, NODE_FEATURES

DATASET_DIR = 'ogbg_molpcba'
FORMAT_NAME = 'algoperf-ogbg-npy'
FORMAT_VERSION = 1
COLUMNS = ('num_nodes', 'num_edges', 'node_feat', 'edge_feat', 'edge_index', 'labels')
SPLITS = ('train', 'validation', 'test')
NUM_TASKS = 128  # molpcba's label columns, the model's outputs.
AVG_NODES_PER_GRAPH = 26  # Upstream's budgets per average-sized graph.
AVG_EDGES_PER_GRAPH = 56
LAYOUT = (
    f'<data_dir>/{DATASET_DIR}/{{train,validation,test}}/{{{",".join(COLUMNS)}}}.npy and '
    f'<data_dir>/{DATASET_DIR}/format.json, written by `algoperf data ogbg --raw_dir=<OGB pcba dir>`'
)


def batch_budgets(per_device_batch_size: int) -> tuple[int, int, int]:
    """(nodes, edges, graphs) of every padded batch: upstream's `dynamically_batch` budgets."""
    n = per_device_batch_size
    return AVG_NODES_PER_GRAPH * n + 1, AVG_EDGES_PER_GRAPH * n, n + 1


class GraphSplit:
    """One split's columns (memory-mapped) and per-graph offsets.

    Attributes:
      num_nodes, num_edges: int [G] nodes and undirected edges (bonds) per graph.
      node_feat: int [N, 9]; edge_feat: int [E, 3]; edge_index: int [E, 2], node indices
        local to each graph; labels: int8 [G, 128], 1/0 and -1 where the label is NaN.
      node_offsets, edge_offsets: int64 [G + 1] first row of each graph.
    """

    def __init__(self, directory: str):
        self.directory = directory
        try:
            cols = {c: np.load(os.path.join(directory, c + '.npy'), mmap_mode='r') for c in COLUMNS}
        except (OSError, ValueError) as e:
            raise DataError(f'{directory}: unreadable ogbg split ({e}); expected {LAYOUT}') from e
        self._check_dtypes(cols)
        self.num_nodes = np.asarray(cols['num_nodes'], dtype=np.int64)
        self.num_edges = np.asarray(cols['num_edges'], dtype=np.int64)
        self.node_feat, self.edge_feat = cols['node_feat'], cols['edge_feat']
        self.edge_index, self.labels = cols['edge_index'], cols['labels']
        for column in ('num_nodes', 'num_edges'):
            counts = getattr(self, column)
            if len(counts) and counts.min() < 0:
                raise DataError(
                    f'{self._file(column)}: graph {int(np.argmax(counts < 0))} has a negative count'
                )
        self.node_offsets = np.concatenate([[0], np.cumsum(self.num_nodes)])
        self.edge_offsets = np.concatenate([[0], np.cumsum(self.num_edges)])
        g = len(self.num_nodes)
        checks = {
            'num_edges': len(self.num_edges) == g,
            'labels': len(self.labels) == g,
            'node_feat': len(self.node_feat) == self.node_offsets[-1],
            'edge_feat': len(self.edge_feat) == self.edge_offsets[-1],
            'edge_index': self.edge_index.shape == (self.edge_offsets[-1], 2),
        }
        for column, ok in checks.items():
            if not ok:
                raise DataError(
                    f'{directory}/{column}.npy: length disagrees with num_nodes/num_edges'
                )
        check_range(self.labels, -1, 2, self._file('labels'), 'label (-1 missing, 0, 1)')
        self._check_edge_index()

    def _file(self, column: str) -> str:
        return os.path.join(self.directory, column + '.npy')

    def _check_dtypes(self, cols: dict) -> None:
        """Integer columns of the shapes the model reads; a float column (e.g. features
        written as float32) is refused rather than cast: it means another converter."""
        shapes = {'num_nodes': (None,), 'num_edges': (None,), 'node_feat': (None, NODE_FEATURES),
                  'edge_feat': (None, EDGE_FEATURES), 'edge_index': (None, 2),
                  'labels': (None, NUM_TASKS)}  # fmt: skip
        for column, shape in shapes.items():
            array = cols[column]
            check_dtype(array, 'iu', self._file(column), column, 'integers (`algoperf data ogbg`)')
            if array.ndim != len(shape) or any(
                s not in (None, d) for s, d in zip(shape, array.shape)
            ):
                want = '(' + ', '.join('rows' if s is None else str(s) for s in shape) + ')'
                raise DataError(
                    f'{self._file(column)}: {column} has shape {array.shape}, expected {want}'
                )

    def _check_edge_index(self) -> None:
        """Every bond's two nodes lie in its own graph: 0 <= local index < the graph's nodes.

        An index past its graph would silently join two molecules, and one past the batch
        fails inside the model as "index out of range in self", naming no file. Checked in
        blocks of graphs holding about 4M bonds (~100 MB of temporaries).
        """
        g, block = len(self.num_nodes), 1 << 22
        start = 0
        while start < g:
            stop = int(
                np.searchsorted(self.edge_offsets, self.edge_offsets[start] + block, 'right')
            )
            stop = min(max(stop - 1, start + 1), g)
            lo, hi = int(self.edge_offsets[start]), int(self.edge_offsets[stop])
            local = np.asarray(self.edge_index[lo:hi], dtype=np.int64)
            limit = np.repeat(self.num_nodes[start:stop], self.num_edges[start:stop])[:, None]
            bad = (local < 0) | (local >= limit)
            if bad.any():
                row = int(np.flatnonzero(bad.any(axis=1))[0])
                graph = int(np.searchsorted(self.edge_offsets, lo + row, 'right')) - 1
                raise DataError(
                    f'{self._file("edge_index")}: row {lo + row} (graph {graph}, '
                    f'{int(self.num_nodes[graph])} nodes) holds node {local[row].tolist()}, '
                    'outside its graph (indices are local to each graph)'
                )
            start = stop

    def __len__(self) -> int:
        return len(self.num_nodes)


def load_split(data_dir: str, split: str) -> GraphSplit:
    """The split's columns; eval_train reads the train split."""
    read_format_file(
        data_dir, DATASET_DIR, FORMAT_NAME, FORMAT_VERSION, LAYOUT, 'algoperf data ogbg'
    )
    root = os.path.join(data_dir, DATASET_DIR)
    return GraphSplit(os.path.join(root, 'train' if split == 'eval_train' else split))


def pack(nodes: np.ndarray, edges: np.ndarray, per_device_batch_size: int, final: bool = True):
    """Greedy batch boundaries of a graph stream, as `jraph.dynamically_batch`.

    Args:
      nodes, edges: per-graph node and directed-edge counts, in stream order.
      per_device_batch_size: n; a batch holds at most 26n nodes, 56n edges, n graphs.
      final: the stream ends here. If False, the last batch is left open (not returned)
        when it ran out of graphs rather than budget, so that the next chunk can fill it.

    Returns:
      (starts, ends) of the closed batches, and the index where the open tail starts.

    Raises:
      ValueError: a single graph exceeds the budgets (upstream: jraph's RuntimeError).
    """
    max_nodes, max_edges, max_graphs = batch_budgets(per_device_batch_size)
    node_budget, graph_budget = max_nodes - 1, max_graphs - 1  # One node and graph for padding.
    cn = np.concatenate([[0], np.cumsum(nodes)])
    ce = np.concatenate([[0], np.cumsum(edges)])
    total = len(nodes)
    starts, ends = [], []
    i = 0
    while i < total:
        j = min(
            int(np.searchsorted(cn, cn[i] + node_budget, side='right')) - 1,
            int(np.searchsorted(ce, ce[i] + max_edges, side='right')) - 1,
            i + graph_budget,
        )
        if j == i:
            raise ValueError(
                f'a graph of {int(nodes[i])} nodes and {int(edges[i])} directed edges does not fit in '
                f'a batch of {node_budget} nodes and {max_edges} edges (per-device batch size '
                f'{per_device_batch_size}); use a larger batch size'
            )
        if j >= total and not final:
            break
        starts.append(i)
        ends.append(min(j, total))
        i = min(j, total)
    return starts, ends, i


def materialize(split: GraphSplit, ids: np.ndarray, per_device_batch_size: int) -> dict:
    """One padded CPU batch of the graphs `ids` (in order), laid out as jraph pads them.

    Returns:
      {'inputs': (nodes, edges, receivers, senders, None, n_node, n_edge) as tensors,
       'targets': float32 [n + 1, 128], 'weights': bool [n + 1, 128]}.
    """
    max_nodes, max_edges, max_graphs = batch_budgets(per_device_batch_size)
    ids = np.asarray(ids, dtype=np.int64)
    k = len(ids)
    nn, ne = split.num_nodes[ids], split.num_edges[ids]
    real_nodes, bonds = int(nn.sum()), int(ne.sum())
    node_rows = concat_ranges(split.node_offsets[ids], nn)
    edge_rows = concat_ranges(split.edge_offsets[ids], ne)

    nodes = np.zeros((max_nodes, split.node_feat.shape[1]), dtype=np.float32)
    nodes[:real_nodes] = split.node_feat[node_rows]
    # Each graph's bonds, then the same bonds reversed (upstream's `_to_jraph`).
    node_base = np.repeat(np.cumsum(nn) - nn, ne)
    local = np.asarray(split.edge_index[edge_rows], dtype=np.int64)
    first_bond = np.repeat(np.cumsum(ne) - ne, ne)
    forward = first_bond + np.arange(bonds)  # 2 * first_bond + position within the graph.
    reverse = forward + np.repeat(ne, ne)
    senders = np.full(max_edges, real_nodes, dtype=np.int64)  # Padding edges: first pad node.
    receivers = np.full(max_edges, real_nodes, dtype=np.int64)
    senders[forward], receivers[forward] = local[:, 0] + node_base, local[:, 1] + node_base
    senders[reverse], receivers[reverse] = receivers[forward], senders[forward]
    edges = np.zeros((max_edges, split.edge_feat.shape[1]), dtype=np.float32)
    feat = split.edge_feat[edge_rows]
    edges[forward], edges[reverse] = feat, feat

    n_node = np.zeros(max_graphs, dtype=np.int64)
    n_edge = np.zeros(max_graphs, dtype=np.int64)
    n_node[:k], n_edge[:k] = nn, 2 * ne
    n_node[k], n_edge[k] = max_nodes - real_nodes, max_edges - 2 * bonds
    labels = np.full((max_graphs, split.labels.shape[1]), -1, dtype=np.int8)
    labels[:k] = split.labels[ids]
    inputs = tuple(
        None if a is None else torch.from_numpy(a)
        for a in (nodes, edges, receivers, senders, None, n_node, n_edge)
    )
    return {
        'inputs': inputs,
        'targets': torch.from_numpy(np.maximum(labels, 0).astype(np.float32)),
        'weights': torch.from_numpy(labels >= 0),
    }


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) over (starts, counts), without a Python loop."""
    total = int(counts.sum())
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return np.arange(total, dtype=np.int64) + shift


def train_batches(
    split: GraphSplit, seed: int, per_device_batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[dict]:
    """Endless shuffled train batches of this rank (every world_size-th packed batch)."""
    directed_edges = 2 * split.num_edges
    carry = np.zeros(0, dtype=np.int64)
    count = 0
    epoch = 0
    while True:
        order = np.concatenate(
            [carry, np.random.default_rng([seed, epoch]).permutation(len(split))]
        )
        epoch += 1
        starts, ends, tail = pack(
            split.num_nodes[order], directed_edges[order], per_device_batch_size, final=False
        )
        for s, e in zip(starts, ends):
            if count % world_size == rank:
                yield materialize(split, order[s:e], per_device_batch_size)
            count += 1
        carry = order[tail:]


def eval_batches(
    split: GraphSplit,
    ids: np.ndarray,
    per_device_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[dict]:
    """This rank's batches of one pass over `ids`; every rank gets the same number.

    Packed batches go to ranks round-robin; ranks left short get all-padding batches
    (weights False), so collectives in the eval loop stay matched.
    """
    directed_edges = 2 * split.num_edges
    starts, ends, _ = pack(split.num_nodes[ids], directed_edges[ids], per_device_batch_size)
    mine = [ids[s:e] for s, e in list(zip(starts, ends))[rank::world_size]]
    per_rank = -(-len(starts) // world_size)
    empty = np.zeros(0, dtype=np.int64)
    mine += [empty] * (per_rank - len(mine))
    return [materialize(split, graph_ids, per_device_batch_size) for graph_ids in mine]


def eval_ids(split: GraphSplit, split_name: str, seed: int, num_examples: int) -> np.ndarray:
    """The graphs an eval reads: the first `num_examples` (eval_train: of a fixed shuffle)."""
    order = np.arange(len(split), dtype=np.int64)
    if split_name == 'eval_train':
        order = np.random.default_rng([seed, 1 << 20]).permutation(len(split))
    return order[:num_examples]
