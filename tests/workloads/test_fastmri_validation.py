"""fastMRI h5 volumes the reader must refuse at open, naming the file and dataset (issue 18).

Wrong dtypes (float32 k-space, which would be read as real with a zero imaginary part),
shapes that do not match (a k-space with other slices than its target, or narrower than
the 320 x 320 crop) and a non-finite `max`: each is a `DataError` (a UserError:
`algoperf run` prints one line and exits 2 before writing anything), raised by the data
check and by opening the split, not at the first batch.
"""

import h5py
import numpy as np
import pytest
import torch

from algoperf.errors import DataError
from tests.workloads.run_refusal import run_refused_line
from workloads.fastmri import input_pipeline as ip
from workloads.fastmri.fixture import write_fastmri_fixture


@pytest.fixture
def volumes(tmp_path):
    files = write_fastmri_fixture(str(tmp_path / 'data'), seed=2, num_train=2, num_val=2, slices=2)
    return tmp_path / 'data', files


def _rewrite(path, **datasets):
    """Replaces datasets (or the 'max' attribute, as max=...) of one volume."""
    with h5py.File(path, 'a') as hf:
        for name, value in datasets.items():
            if name == 'max':
                hf.attrs['max'] = value
                continue
            del hf[name]
            hf.create_dataset(name, data=value)


def _check_all(data_dir, path, match):
    """The reader at open and the workload's data check both refuse `path`, in one line."""
    from algoperf import registry
    from algoperf.runtime import Runtime

    split = 'train' if 'singlecoil_train' in path else 'validation'
    with pytest.raises(DataError, match=match) as e:
        ip.get_fastmri_dataset(split, str(data_dir), None, 2)
    assert path in str(e.value) and '\n' not in str(e.value)
    wl = registry.get_workload('fastmri', runtime=Runtime(torch.device('cpu')))
    with pytest.raises(DataError, match=match):
        wl.validate_data_dir(str(data_dir))


def test_float32_kspace_is_refused(volumes):
    data_dir, files = volumes
    with h5py.File(files['train'][1]) as hf:
        real = np.abs(hf['kspace'][()]).astype(np.float32)
    _rewrite(files['train'][1], kspace=real)
    _check_all(data_dir, files['train'][1], "'kspace' has dtype float32, expected complex64")


def test_float_target_must_be_float(volumes):
    data_dir, files = volumes
    with h5py.File(files['val'][0]) as hf:
        target = hf['reconstruction_esc'][()]
    _rewrite(files['val'][0], reconstruction_esc=(target * 1e6).astype(np.int32))
    _check_all(data_dir, files['val'][0], "'reconstruction_esc' has dtype int32, expected float32")


def test_kspace_with_other_slices_than_its_target_is_refused(volumes):
    data_dir, files = volumes
    with h5py.File(files['train'][0]) as hf:
        kspace = hf['kspace'][()]
    _rewrite(files['train'][0], kspace=np.concatenate([kspace, kspace[:1]]))
    _check_all(data_dir, files['train'][0], r"'kspace' \(3, 640, \d+\) does not match")


def test_kspace_narrower_than_the_crop_and_wrong_ranks_are_refused(volumes):
    data_dir, files = volumes
    with h5py.File(files['val'][1]) as hf:
        kspace = hf['kspace'][()]
    _rewrite(files['val'][1], kspace=kspace[:, :, :300])
    _check_all(data_dir, files['val'][1], r'each at least 320 x 320')
    _rewrite(files['val'][1], kspace=kspace[:, :, 0])
    _check_all(data_dir, files['val'][1], r"'kspace' \(2, 640\) and 'reconstruction_esc'")


def test_non_finite_volume_max_is_refused(volumes):
    data_dir, files = volumes
    _rewrite(files['train'][0], max=float('nan'))
    _check_all(data_dir, files['train'][0], "attribute 'max' is nan")


def test_run_exits_2_with_one_line_naming_the_file(volumes, tmp_path, capsys):
    data_dir, files = volumes
    with h5py.File(files['val'][1]) as hf:
        real = hf['kspace'][()].real.astype(np.float32)
    _rewrite(files['val'][1], kspace=real)
    line = run_refused_line('fastmri', data_dir, tmp_path, capsys, name='mri')
    assert files['val'][1] in line and "'kspace'" in line, line


def test_the_fixture_passes_the_checks(volumes):
    _, files = volumes
    assert [ip.volume_slices(p) for p in files['train'] + files['val']] == [2, 2, 2, 2]
