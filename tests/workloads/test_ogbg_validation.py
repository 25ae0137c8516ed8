"""ogbg columns the reader must refuse at open, naming the file and column (issue 18).

Float features (read as if integers before), an `edge_index` naming a node outside its
graph (it silently joined molecules, or failed in the model as "index out of range in
self"), labels outside {-1, 0, 1} and wrong shapes: each a `DataError` (a
UserError: `algoperf run` prints one line and exits 2 before writing anything).
"""

import shutil

import numpy as np
import pytest
import torch

from algoperf import registry
from algoperf.errors import DataError
from algoperf.runtime import Runtime
from tests.workloads.run_refusal import run_refused_line
from workloads.ogbg import convert
from workloads.ogbg import input_pipeline as ip
from workloads.ogbg.fixture import write_ogbg_fixture


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp('ogbg_valid')
    write_ogbg_fixture(str(root / 'raw'), seed=6, num_graphs=60, max_nodes=20)
    convert.convert(str(root / 'raw'), str(root / 'data'), log=lambda m: None)
    return root / 'data'


@pytest.fixture
def data_dir(converted, tmp_path):
    shutil.copytree(converted, tmp_path / 'data')
    return tmp_path / 'data'


def _column(data_dir, split, name):
    path = data_dir / ip.DATASET_DIR / split / f'{name}.npy'
    return path, np.load(path)


def _refused(data_dir, split, match):
    with pytest.raises(DataError, match=match) as e:
        ip.load_split(str(data_dir), split)
    assert '\n' not in str(e.value)
    wl = registry.get_workload('ogbg', runtime=Runtime(torch.device('cpu')))
    with pytest.raises(DataError, match=match):
        wl.validate_data_dir(str(data_dir))
    return str(e.value)


@pytest.mark.parametrize('column', ['node_feat', 'edge_feat', 'edge_index', 'num_nodes'])
def test_float_columns_are_refused(data_dir, column):
    path, values = _column(data_dir, 'train', column)
    np.save(path, values.astype(np.float32))
    _refused(
        data_dir, 'train', f'train/{column}.npy: {column} has dtype float32, expected integers'
    )


def test_edge_index_outside_its_graph_is_refused(data_dir):
    path, edges = _column(data_dir, 'validation', 'edge_index')
    split = ip.load_split(str(data_dir), 'validation')
    graph = 3
    row = int(split.edge_offsets[graph])
    edges[row, 1] = split.num_nodes[graph]  # One past the graph: the next molecule's node.
    np.save(path, edges)
    message = _refused(
        data_dir, 'validation', f'validation/edge_index.npy: row {row} \\(graph {graph},'
    )
    assert 'outside its graph' in message
    edges[row, 1] = -1
    np.save(path, edges)
    _refused(data_dir, 'validation', f'edge_index.npy: row {row} ')


def test_labels_outside_minus_one_zero_one_are_refused(data_dir):
    path, labels = _column(data_dir, 'test', 'labels')
    labels[4, 7] = 2
    np.save(path, labels)
    _refused(data_dir, 'test', r'test/labels.npy: label .* row 4 holds 2, outside \[-1, 2\)')


def test_wrong_feature_width_and_negative_counts_are_refused(data_dir):
    path, feat = _column(data_dir, 'train', 'node_feat')
    np.save(path, feat[:, :8])
    _refused(data_dir, 'train', r'node_feat has shape \(\d+, 8\), expected \(rows, 9\)')
    np.save(path, feat)
    path, counts = _column(data_dir, 'train', 'num_edges')
    counts[2] = -counts[2] - 1
    np.save(path, counts)
    _refused(data_dir, 'train', 'num_edges.npy: graph 2 has a negative count')


def test_run_exits_2_with_one_line_naming_the_file(data_dir, tmp_path, capsys):
    path, feat = _column(data_dir, 'validation', 'node_feat')
    np.save(path, feat.astype(np.float64))
    line = run_refused_line('ogbg', data_dir, tmp_path, capsys, name='g')
    assert 'validation/node_feat.npy' in line, line


def test_converter_output_passes(converted):
    for split in ip.SPLITS:
        assert len(ip.load_split(str(converted), split)) > 0
