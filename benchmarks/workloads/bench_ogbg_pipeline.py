"""ogbg-molpcba input pipeline: our packed reader vs upstream's per-graph path (graphs/s).

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/workloads/bench_ogbg_pipeline.py \
        --benchmark-json=benchmarks/results/ogbg_pipeline_<hw>_<yyyymmdd>.json

Input: 20,000 generated molecules in the reader's format (what `algoperf data ogbg`
writes), with molpcba's statistics: atoms ~ N(26, 7) clipped to [2, 90], bonds = atoms - 1
plus 0-3 ring closures (molpcba: 26.0 atoms, 28.1 bonds on average), 9 and 3 categorical
features, 128 labels mostly missing. Memory-mapped from the page cache.

One round = the first 16 train batches at per-device batch 512 (upstream's NAdamW
baseline batch; ~8,200 graphs, ~213k nodes), shuffled, packed under upstream's budgets,
padded, as CPU tensors. Providers:
    packed: `input_pipeline.train_batches` (plan from counts, vectorised gathers).
    per_graph (peer): `reference_reader`, a port of upstream's `_to_jraph` +
        `jraph.dynamically_batch` + padding (one dict of arrays per graph, concatenated),
        then `torch.from_numpy` as upstream's `_pytorch_map`; no TF.
"""

import json
import os

import numpy as np
import pytest
import torch
from _harness import rounds

from workloads.ogbg import input_pipeline as ip
from workloads.ogbg import reference_reader as ref

NUM_GRAPHS, BATCH, BATCHES = 20_000, 512, 16
ROUNDS = {'packed': 20, 'per_graph': 5}


def write_molpcba_like(root: str, num_graphs: int, seed: int = 0) -> str:
    """A train split with molpcba's size statistics in the reader's format; returns data_dir."""
    rng = np.random.default_rng(seed)
    nodes = np.clip(np.round(rng.normal(26, 7, num_graphs)), 2, 90).astype(np.int64)
    extra = rng.integers(0, 4, num_graphs)
    bonds = nodes - 1 + extra
    edge_index = []
    for n, e in zip(nodes, bonds):
        tree = np.stack([rng.integers(0, np.arange(1, n)), np.arange(1, n)], axis=1)
        rings = rng.integers(0, n, (e - (n - 1), 2))
        edge_index.append(np.concatenate([tree, rings]))
    columns = {
        'num_nodes': nodes.astype(np.int32),
        'num_edges': bonds.astype(np.int32),
        'node_feat': rng.integers(0, 12, (int(nodes.sum()), 9)).astype(np.uint8),
        'edge_feat': rng.integers(0, 5, (int(bonds.sum()), 3)).astype(np.uint8),
        'edge_index': np.concatenate(edge_index).astype(np.int32),
        'labels': np.where(
            rng.random((num_graphs, 128)) < 0.9, -1, rng.random((num_graphs, 128)) < 0.1
        ).astype(np.int8),
    }
    out = os.path.join(root, ip.DATASET_DIR)
    for split in ip.SPLITS:
        os.makedirs(os.path.join(out, split))
        for name, array in columns.items():
            np.save(os.path.join(out, split, name + '.npy'), array)
    with open(os.path.join(out, 'format.json'), 'w') as f:
        json.dump({'format': ip.FORMAT_NAME, 'version': ip.FORMAT_VERSION}, f)
    return root


@pytest.fixture(scope='module')
def train_split(tmp_path_factory):
    data_dir = write_molpcba_like(str(tmp_path_factory.mktemp('ogbg')), NUM_GRAPHS)
    return ip.load_split(data_dir, 'train')


def _packed(split):
    stream = ip.train_batches(split, seed=0, per_device_batch_size=BATCH)
    return [next(stream) for _ in range(BATCHES)]


def _per_graph(split):
    order = np.random.default_rng([0, 0]).permutation(len(split))
    stream = ref.dynamically_batch((ref.to_graph(split, int(i)) for i in order), BATCH)
    out = []
    for _ in range(BATCHES):
        batch = next(stream)
        out.append({k: torch.from_numpy(v) for k, v in batch.items()})
    return out


PROVIDERS = {'packed': _packed, 'per_graph': _per_graph}


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_ogbg_train_batches(benchmark, train_split, provider):
    graphs = sum(int(b['weights'].any(dim=1).sum()) for b in _packed(train_split))
    benchmark.group = f'ogbg_pipeline_b{BATCH}'
    benchmark.extra_info.update(
        device='cpu', items=graphs, item_unit='graph', peer='per_graph',
        torch_num_threads=torch.get_num_threads(),
    )  # fmt: skip
    benchmark.pedantic(
        PROVIDERS[provider], args=(train_split,), rounds=rounds(ROUNDS[provider]), warmup_rounds=1
    )
    stats = getattr(benchmark, 'stats', None)
    if stats is not None and getattr(stats, 'stats', None) and stats.stats.data:
        benchmark.extra_info['report'] = {'graphs/s': f'{graphs / stats.stats.median:,.0f}'}
