"""A tiny ogbg-molpcba release in OGB's on-disk layout (what `pcba.zip` unzips to), for tests.

Layout as the real release: ``pcba/raw/{num-node-list,num-edge-list,node-feat,edge-feat,
edge,graph-label}.csv.gz`` (headerless CSV; one row per graph, node, bond; bonds as
node indices local to their graph; 128 label columns with empty cells for missing
labels) and ``pcba/split/scaffold/{train,valid,test}.csv.gz`` (graph indices, one per
line, interleaved over the index range as scaffold splits are). Molecule-like graphs: a
random spanning tree plus a few ring bonds, 9 categorical atom features (atomic number
below 120), 3 bond features, about 90% of labels missing and 10% of the rest positive
(molpcba's rates, roughly). Deterministic in ``seed``.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

NUM_TASKS = 128
NODE_FEATURE_MAX = (119, 4, 12, 12, 10, 6, 6, 2, 2)  # OGB's atom feature vocabularies.
EDGE_FEATURE_MAX = (5, 6, 2)


def _molecule(rng: np.random.Generator, min_nodes: int, max_nodes: int):
    n = int(rng.integers(min_nodes, max_nodes + 1))
    parents = [int(rng.integers(0, i)) for i in range(1, n)]
    bonds = [(p, i) for i, p in zip(range(1, n), parents)]
    for _ in range(int(rng.integers(0, 3)) if n > 3 else 0):  # Ring closures.
        a, b = rng.choice(n, size=2, replace=False)
        bonds.append((int(a), int(b)))
    return n, np.array(bonds, dtype=np.int64).reshape(-1, 2)


def _write_csv(path: str, rows: np.ndarray, fmt) -> None:
    with gzip.open(path, 'wt') as f:
        for row in rows:
            f.write(','.join(fmt(v) for v in np.atleast_1d(row)) + '\n')


def write_ogbg_fixture(
    root: str,
    seed: int = 0,
    num_graphs: int = 60,
    min_nodes: int = 2,
    max_nodes: int = 30,
    split_fractions: tuple[float, float] = (0.6, 0.2),
) -> dict[str, np.ndarray]:
    """Writes ``<root>/pcba/...``; returns the split indices {'train', 'valid', 'test'}.

    Args:
      root: Created if missing; the release goes to ``root/pcba``.
      seed: Seeds every value.
      num_graphs: Molecules in the release.
      min_nodes, max_nodes: Atom count range (molpcba: 1 to 332, mean 26).
      split_fractions: train and valid shares; test gets the rest.
    """
    rng = np.random.default_rng(seed)
    release = os.path.join(root, 'pcba')
    os.makedirs(os.path.join(release, 'raw'), exist_ok=True)
    os.makedirs(os.path.join(release, 'split', 'scaffold'), exist_ok=True)
    sizes, bonds = zip(*(_molecule(rng, min_nodes, max_nodes) for _ in range(num_graphs)))
    num_nodes = np.array(sizes)
    num_edges = np.array([len(b) for b in bonds])
    node_feat = np.stack(
        [rng.integers(0, m + 1, int(num_nodes.sum())) for m in NODE_FEATURE_MAX], axis=1
    )
    edge_feat = np.stack(
        [rng.integers(0, m + 1, int(num_edges.sum())) for m in EDGE_FEATURE_MAX], axis=1
    )
    labels = (rng.random((num_graphs, NUM_TASKS)) < 0.1).astype(np.float64)
    labels[rng.random((num_graphs, NUM_TASKS)) < 0.9] = np.nan
    raw = os.path.join(release, 'raw')
    _write_csv(os.path.join(raw, 'num-node-list.csv.gz'), num_nodes, str)
    _write_csv(os.path.join(raw, 'num-edge-list.csv.gz'), num_edges, str)
    _write_csv(os.path.join(raw, 'node-feat.csv.gz'), node_feat, str)
    _write_csv(os.path.join(raw, 'edge-feat.csv.gz'), edge_feat, str)
    _write_csv(os.path.join(raw, 'edge.csv.gz'), np.concatenate(bonds), str)
    _write_csv(
        os.path.join(raw, 'graph-label.csv.gz'), labels, lambda v: '' if np.isnan(v) else f'{v:.1f}'
    )
    which = rng.random(num_graphs)
    train_end, valid_end = split_fractions[0], sum(split_fractions)
    splits = {
        'train': np.flatnonzero(which < train_end),
        'valid': np.flatnonzero((which >= train_end) & (which < valid_end)),
        'test': np.flatnonzero(which >= valid_end),
    }
    for name, ids in splits.items():
        # Shuffled on disk: the converter must sort (TFDS yields ascending indices).
        _write_csv(
            os.path.join(release, 'split', 'scaffold', f'{name}.csv.gz'), rng.permutation(ids), str
        )
    return splits
