"""Criteo files the reader refuses when a split is opened, naming `file:line` (issue 18).

What is cheap to check at open: the first 64 KiB of every file of the split parse as
Criteo TSV. A gzip-compressed file, a binary one and a file of another layout failed at
their first batch before (for a late train file, hours in); now the data check and the
reader's constructor raise `CriteoFormatError`, a `DataError` (a UserError:
`algoperf run` prints one line and exits 2 before writing anything).
"""

import gzip

import pytest
import torch

from algoperf import registry
from algoperf.errors import DataError
from algoperf.runtime import Runtime
from tests.workloads.run_refusal import run_refused_line
from workloads.criteo1tb import fixture
from workloads.criteo1tb import input_pipeline as ip


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / 'criteo'
    root.mkdir()
    fixture.write_criteo_fixture(str(root), lines_per_file=40)
    return root


def _refused(data_dir, path, match, split='train'):
    with pytest.raises(ip.CriteoFormatError, match=match) as e:
        ip.get_criteo1tb_dataset(split, str(data_dir), None, 8)  # At the call, not next().
    assert str(e.value).startswith(f'{path}:') and '\n' not in str(e.value)
    assert isinstance(e.value, DataError) and isinstance(e.value, ValueError)
    wl = registry.get_workload('criteo1tb_test', runtime=Runtime(torch.device('cpu')))
    with pytest.raises(ip.CriteoFormatError, match=match):
        wl.validate_data_dir(str(data_dir))


def test_gzip_file_is_refused_at_open(data_dir):
    path = data_dir / 'day_1_00'
    path.write_bytes(gzip.compress(path.read_bytes()))
    _refused(data_dir, path, r'day_1_00:1: gzip-compressed')


def test_binary_file_without_line_ends_is_refused(data_dir):
    path = data_dir / 'day_10_00'
    path.write_bytes(bytes(range(1, 10)) * (ip.HEAD_BYTES // 9 + 2))
    _refused(data_dir, path, r'day_10_00:1: no line end in the first 64 KiB')


def test_other_layout_is_refused_naming_the_line(data_dir):
    path = data_dir / 'day_23_19'
    lines = path.read_bytes().split(b'\n')
    lines[2] = b'1,2,3,4'  # A CSV line: one field.
    path.write_bytes(b'\n'.join(lines))
    _refused(
        data_dir, path, r'day_23_19:3: expected 40 tab-separated fields, found 1', 'validation'
    )


def test_a_good_head_and_an_empty_file_pass(data_dir):
    (data_dir / 'day_0_01').write_bytes(b'')
    ds = ip.get_criteo1tb_dataset('train', str(data_dir), None, 8)
    assert next(ds)['inputs'].shape == (8, 39)
    path = data_dir / 'day_23_00'
    path.write_bytes(path.read_bytes().rstrip(b'\n') + b'\r')  # A lone '\r' is no line (TF).
    ip.check_file_head(str(path))


def test_run_exits_2_with_one_line_naming_the_file(data_dir, tmp_path, capsys):
    path = data_dir / 'day_0_00'
    path.write_bytes(gzip.compress(path.read_bytes()))
    line = run_refused_line('criteo1tb_test', data_dir, tmp_path, capsys, name='c')
    assert f'{path}:1: gzip-compressed' in line, line
