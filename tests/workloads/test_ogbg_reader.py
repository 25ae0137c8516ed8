"""ogbg-molpcba data: `algoperf data ogbg` on a generated OGB release, and the reader.

The reader's batches are compared with `reference_reader`, a per-graph port of upstream's
`_to_jraph` + `jraph.dynamically_batch` + padding + label masks, over whole passes; the
conversion is checked against the release's CSV files read independently with the
`csv` module.
"""

import csv
import gzip
import json

import numpy as np
import pytest
import torch

from algoperf import cli
from workloads.ogbg import input_pipeline as ip
from workloads.ogbg import reference_reader as ref
from workloads.ogbg.fixture import write_ogbg_fixture


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp('ogbg')
    splits = write_ogbg_fixture(str(root / 'raw'), seed=3, num_graphs=150, max_nodes=40)
    assert (
        cli.main(['data', 'ogbg', f'--raw_dir={root / "raw"}', f'--data_dir={root / "data"}']) == 0
    )
    return root, splits


def _rows(path):
    with gzip.open(path, 'rt') as f:
        return list(csv.reader(f))


# ---- conversion --------------------------------------------------------------------------------
def test_conversion_keeps_graphs_in_ascending_index_with_their_features_and_labels(release):
    root, splits = release
    raw = root / 'raw' / 'pcba' / 'raw'
    sizes = [int(r[0]) for r in _rows(raw / 'num-node-list.csv.gz')]
    bonds = [int(r[0]) for r in _rows(raw / 'num-edge-list.csv.gz')]
    node_rows, edge_rows = _rows(raw / 'node-feat.csv.gz'), _rows(raw / 'edge.csv.gz')
    label_rows = _rows(raw / 'graph-label.csv.gz')
    meta = json.loads((root / 'data' / 'ogbg_molpcba' / 'format.json').read_text())
    assert meta['graphs'] == {'train': len(splits['train']), 'validation': len(splits['valid']),
                              'test': len(splits['test'])}  # fmt: skip
    test = ip.load_split(str(root / 'data'), 'test')
    ids = sorted(splits['test'])
    assert test.num_nodes.tolist() == [sizes[i] for i in ids]
    assert test.labels.dtype == np.int8 and test.edge_index.dtype == np.int32
    for k, i in enumerate(ids):
        n0, e0 = sum(sizes[:i]), sum(bonds[:i])
        expected_nodes = [[int(v) for v in r] for r in node_rows[n0 : n0 + sizes[i]]]
        assert (
            test.node_feat[test.node_offsets[k] : test.node_offsets[k + 1]].tolist()
            == expected_nodes
        )
        expected_edges = [[int(v) for v in r] for r in edge_rows[e0 : e0 + bonds[i]]]
        assert (
            test.edge_index[test.edge_offsets[k] : test.edge_offsets[k + 1]].tolist()
            == expected_edges
        )
        assert test.labels[k].tolist() == [-1 if v == '' else int(float(v)) for v in label_rows[i]]


def test_conversion_refuses_to_overwrite_and_names_bad_input(release, tmp_path, capsys):
    root, _ = release
    args = ['data', 'ogbg', f'--raw_dir={root / "raw"}', f'--data_dir={root / "data"}']
    assert cli.main(args) == 2
    assert '--overwrite' in capsys.readouterr().err
    assert (
        cli.main(['data', 'ogbg', f'--raw_dir={tmp_path}', f'--data_dir={tmp_path / "out"}']) == 2
    )
    assert 'pcba.zip' in capsys.readouterr().err
    # A bond naming a node outside its graph: the error names the file and line; nothing written.
    bad = tmp_path / 'bad'
    write_ogbg_fixture(str(bad), seed=4, num_graphs=10)
    edge_file = bad / 'pcba' / 'raw' / 'edge.csv.gz'
    rows = _rows(edge_file)
    rows[2] = ['0', '999']
    with gzip.open(edge_file, 'wt') as f:
        f.writelines(','.join(r) + '\n' for r in rows)
    assert cli.main(['data', 'ogbg', f'--raw_dir={bad}', f'--data_dir={tmp_path / "out"}']) == 2
    err = capsys.readouterr().err
    assert 'edge.csv.gz: line 3' in err
    assert not (tmp_path / 'out').exists()  # Validated before anything is created.


# ---- batches -----------------------------------------------------------------------------------
def _assert_same_batch(ours, theirs):
    nodes, edges, receivers, senders, globals_, n_node, n_edge = ours['inputs']
    assert globals_ is None
    for key, got in (('nodes', nodes), ('edges', edges), ('senders', senders),
                     ('receivers', receivers), ('n_node', n_node), ('n_edge', n_edge)):  # fmt: skip
        np.testing.assert_array_equal(got.numpy(), theirs[key], err_msg=key)
    np.testing.assert_array_equal(ours['targets'].numpy(), theirs['targets'])
    np.testing.assert_array_equal(ours['weights'].numpy(), theirs['weights'])


@pytest.mark.parametrize('n', [2, 3, 8])
def test_eval_pass_equals_upstreams_per_graph_batching(release, n):
    root, _ = release
    split = ip.load_split(str(root / 'data'), 'validation')
    ids = ip.eval_ids(split, 'validation', 0, len(split))
    ours = ip.eval_batches(split, ids, n)
    theirs = list(ref.dynamically_batch((ref.to_graph(split, i) for i in ids), n))
    assert len(ours) == len(theirs) > 1
    for a, b in zip(ours, theirs):
        _assert_same_batch(a, b)
    # Fixed shapes (the reference is fed every graph once, so ours hold each once too).
    assert all(b['targets'].shape == (n + 1, 128) for b in ours)
    assert all(
        b['inputs'][0].shape == (26 * n + 1, 9) and b['inputs'][1].shape == (56 * n, 3)
        for b in ours
    )


def test_train_stream_runs_across_epochs_like_shuffle_repeat_batch(release):
    root, _ = release
    split = ip.load_split(str(root / 'data'), 'train')
    n = 4
    stream = ip.train_batches(split, seed=7, per_device_batch_size=n)
    ours = [next(stream) for _ in range(3 * len(split) // n)]
    epochs = [np.random.default_rng([7, e]).permutation(len(split)) for e in range(4)]
    graphs = (ref.to_graph(split, int(i)) for i in np.concatenate(epochs))
    theirs = ref.dynamically_batch(graphs, n)
    for a, b in zip(ours, theirs):
        _assert_same_batch(a, b)
    # Shapes never change (one compiled graph); the seed decides the order.
    other = next(ip.train_batches(split, seed=8, per_device_batch_size=n))
    assert not torch.equal(other['targets'], ours[0]['targets'])


def test_ranks_split_the_stream_round_robin_with_matched_eval_counts(release):
    root, _ = release
    split = ip.load_split(str(root / 'data'), 'validation')
    ids = ip.eval_ids(split, 'validation', 0, len(split))
    single = ip.eval_batches(split, ids, 2)
    per_rank = [ip.eval_batches(split, ids, 2, rank=r, world_size=3) for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == -(-len(single) // 3)
    for k, batch in enumerate(single):
        _assert_same_batch(per_rank[k % 3][k // 3], _as_numpy(batch))
    fillers = [b for r, mine in enumerate(per_rank) for b in mine[len(single[r::3]) :]]
    assert len(fillers) == (-len(single)) % 3 and all(not b['weights'].any() for b in fillers)
    train = ip.load_split(str(root / 'data'), 'train')
    whole = ip.train_batches(train, 1, 4)
    ranks = [ip.train_batches(train, 1, 4, rank=r, world_size=2) for r in range(2)]
    for k in range(10):
        _assert_same_batch(next(ranks[k % 2]), _as_numpy(next(whole)))


def _as_numpy(batch):
    nodes, edges, receivers, senders, _, n_node, n_edge = (
        None if t is None else t.numpy() for t in batch['inputs']
    )
    return {'nodes': nodes, 'edges': edges, 'receivers': receivers, 'senders': senders,
            'n_node': n_node, 'n_edge': n_edge, 'targets': batch['targets'].numpy(),
            'weights': batch['weights'].numpy()}  # fmt: skip


def test_eval_train_is_a_fixed_subset_and_a_too_large_graph_is_named(release):
    root, _ = release
    train = ip.load_split(str(root / 'data'), 'eval_train')
    a, b = ip.eval_ids(train, 'eval_train', 5, 20), ip.eval_ids(train, 'eval_train', 5, 20)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 20 and not np.array_equal(a, np.arange(20))
    with pytest.raises(ValueError, match='does not fit in a batch of 26 nodes'):
        ip.eval_batches(train, np.arange(len(train)), 1)
