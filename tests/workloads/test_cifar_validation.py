"""CIFAR-10 batch files: no code runs from them, bad labels are refused (issue 18).

The python version of CIFAR-10 is pickled; a plain `pickle.load` ran whatever callable a
planted file named. The reader's unpickler allows numpy arrays only, and a refused or
malformed file is a `DataError` naming it (a UserError: exit 2 from the CLI).
"""

import os
import pickle

import numpy as np
import pytest

from algoperf.errors import DataError
from workloads.cifar import input_pipeline as ip
from workloads.cifar.fixture import write_cifar_fixture


class _Payload:
    """Unpickling this calls os.mkdir(marker): harmless, and visible if it ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize('protocol', [2, 5])
def test_a_planted_payload_does_not_run(tmp_path, protocol):
    root = write_cifar_fixture(str(tmp_path), per_train_file=4, num_test=4)
    path = os.path.join(root, ip.TRAIN_FILES[0])
    with open(path, 'rb') as f:
        entry = pickle.load(f, encoding='bytes')  # The test's own file: trusted here.
    marker = tmp_path / 'payload_ran'
    entry[b'batch_label'] = _Payload(str(marker))
    with open(path, 'wb') as f:
        pickle.dump(entry, f, protocol=protocol)
    with pytest.raises(DataError, match=f'{path} is not a CIFAR-10 python batch file.*posix.mkdir'):
        ip.load_batch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize('protocol', [2, 5])
def test_array_pickles_of_either_protocol_load(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    path = tmp_path / 'batch'
    with open(path, 'wb') as f:
        pickle.dump({b'data': data, b'labels': [3, 9], b'batch_label': b'x'}, f, protocol=protocol)
    images, labels = ip.load_batch_file(str(path))
    np.testing.assert_array_equal(images.reshape(2, 3072), data)
    assert labels.tolist() == [3, 9]


def test_labels_outside_the_ten_classes_are_refused(tmp_path):
    path = tmp_path / 'batch'
    for labels in ([0, 10], [-1, 2], ['a', 'b']):
        with open(path, 'wb') as f:
            pickle.dump({b'data': np.zeros((2, 3072), np.uint8), b'labels': labels}, f, protocol=2)
        with pytest.raises(DataError, match=f'{path}: labels') as e:
            ip.load_batch_file(str(path))
        assert '\n' not in str(e.value)
