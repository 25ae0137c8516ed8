"""WMT token arrays the reader must refuse at open, naming the file and field (issue 18).

Float token ids (cast silently into the int64 batches before), ids at or past the
model's 32,000 embedding rows (they failed in the model as "index out of range in
self", naming no file), offsets out of order and a wrong rank: each a `DataError`
(a UserError: `algoperf run` prints one line and exits 2 before writing anything).
"""

import shutil

import numpy as np
import pytest
import torch

from algoperf import cli
from algoperf.errors import DataError
from algoperf.runtime import Runtime
from tests.workloads.run_refusal import run_refused_line
from workloads.wmt import input_pipeline as ip
from workloads.wmt import workload as wmt
from workloads.wmt.fixture import write_wmt_fixture


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp('wmt_valid')
    write_wmt_fixture(
        str(root / 'raw'), seed=2, split_pairs={'train': 80, 'validation': 5, 'test': 5}
    )
    args = [
        'data',
        'wmt',
        f'--raw_dir={root / "raw"}',
        f'--data_dir={root / "data"}',
        '--vocab_size=60',
    ]
    assert cli.main(args) == 0
    return root / 'data'


@pytest.fixture
def data_dir(converted, tmp_path):
    shutil.copytree(converted, tmp_path / 'data')
    return tmp_path / 'data'


def _array(data_dir, split, name):
    path = data_dir / ip.DATASET_DIR / split / f'{name}.npy'
    return path, np.load(path)


def _refused(data_dir, split, match):
    with pytest.raises(DataError, match=match) as e:
        ip.load_split(str(data_dir), split)
    assert '\n' not in str(e.value)
    with pytest.raises(DataError, match=match):
        wmt.WmtWorkload(runtime=Runtime(torch.device('cpu'))).validate_data_dir(str(data_dir))
    return str(e.value)


def test_float_tokens_are_refused(data_dir):
    path, tokens = _array(data_dir, 'train', 'targets_tokens')
    np.save(path, tokens.astype(np.float32))
    _refused(data_dir, 'train', 'train/targets_tokens.npy: targets tokens has dtype float32')


def test_token_ids_past_the_vocabulary_are_refused(data_dir):
    path, tokens = _array(data_dir, 'validation', 'inputs_tokens')
    tokens[7] = ip.VOCAB_SIZE  # uint16 holds it; the embedding has 32,000 rows.
    np.save(path, tokens)
    message = _refused(
        data_dir, 'validation', r'validation/inputs_tokens.npy: inputs token id row 7'
    )
    assert 'holds 32000, outside [0, 32000)' in message
    assert wmt.VOCAB_SIZE == ip.VOCAB_SIZE == 32_000


def test_offsets_out_of_order_and_float_offsets_are_refused(data_dir):
    path, offsets = _array(data_dir, 'test', 'targets_offsets')
    swapped = offsets.copy()
    swapped[1], swapped[2] = offsets[2], offsets[1]
    np.save(path, swapped)
    _refused(
        data_dir, 'test', 'test/targets_offsets.npy: does not span targets_tokens.npy in order'
    )
    np.save(path, offsets.astype(np.float64))
    _refused(data_dir, 'test', 'targets offsets has dtype float64, expected integer offsets')


def test_two_dimensional_tokens_are_refused(data_dir):
    path, tokens = _array(data_dir, 'test', 'inputs_tokens')
    np.save(path, tokens[: len(tokens) // 2 * 2].reshape(-1, 2))
    _refused(data_dir, 'test', r'inputs tokens have shape \(\d+, 2\), expected one dimension')


def test_run_exits_2_with_one_line_naming_the_file(data_dir, tmp_path, capsys):
    path, tokens = _array(data_dir, 'train', 'inputs_tokens')
    np.save(path, tokens.astype(np.float64))
    line = run_refused_line('wmt', data_dir, tmp_path, capsys, name='w')
    assert 'train/inputs_tokens.npy' in line, line


def test_converter_output_passes(converted):
    for split in ip.SPLITS:
        assert len(ip.load_split(str(converted), split)) > 0
