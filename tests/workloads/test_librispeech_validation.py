"""LibriSpeech files the reader must refuse, naming the file and field (issue 18).

Float audio (float64 samples in [-1, 1] trained on near-silence before), samples past
16 bits, float target ids, ids at or past the models' 1,024 outputs, a binary or
malformed subset CSV: each a `DataError` (a UserError: `algoperf run` prints
one line and exits 2). The data check reads each subset's first example; every other
example is checked as it is loaded, and the error reaches the consumer intact.
"""

import os

import numpy as np
import pandas as pd
import pytest
import torch

from algoperf import registry
from algoperf.errors import DataError
from algoperf.runtime import Runtime
from tests.workloads.run_refusal import run_refused_line
from workloads.librispeech_conformer import input_pipeline as ip


@pytest.fixture
def data_dir(tmp_path):
    """Upstream's preprocessed layout, written directly: 3 short examples per subset."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'librispeech'
    os.makedirs(root)
    (root / ip.TOKENIZER_FILE).write_bytes(b'not read by the checks')
    for subset in ip.SUBSETS:
        os.makedirs(root / subset)
        ids = [f'{100 + i}-7-{i:04d}' for i in range(3)]
        for utt in ids:
            audio = rng.integers(-(1 << 15), 1 << 15, 1600, dtype=np.int64)
            np.save(root / subset / f'{utt}_audio.npy', audio)
            np.save(root / subset / f'{utt}_targets.npy', rng.integers(1, 40, 9, dtype=np.int32))
        pd.DataFrame(ids, columns=['id']).to_csv(root / f'{subset}.csv')
    return root


def _example(data_dir, subset='dev-clean', i=0, kind='audio'):
    return data_dir / subset / f'{100 + i}-7-{i:04d}_{kind}.npy'


def _refused(data_dir, path, match, subset='dev-clean', i=0):
    with pytest.raises(DataError, match=match) as e:
        ip.load_example(str(data_dir), f'{subset}/{100 + i}-7-{i:04d}')
    assert str(path) in str(e.value) and '\n' not in str(e.value)
    return e.value


def test_float64_audio_is_refused(data_dir):
    path = _example(data_dir)
    np.save(path, np.load(path) / 32768.0)
    _refused(data_dir, path, 'audio has dtype float64, expected integer 16-bit PCM samples')
    with pytest.raises(DataError, match='dev-clean/100-7-0000_audio.npy'):
        ip.validate(str(data_dir))  # The first example of each subset: before any log.


def test_audio_past_16_bits_is_refused(data_dir):
    path = _example(data_dir, i=1)
    audio = np.load(path)
    audio[5] = 40_000
    np.save(path, audio)
    _refused(data_dir, path, r'audio holds 40000, outside \[-32768, 32768\)', i=1)


def test_target_ids_must_be_integers_below_the_vocabulary(data_dir):
    path = _example(data_dir, 'test-clean', 2, 'targets')
    targets = np.load(path)
    np.save(path, targets.astype(np.float32))
    _refused(
        data_dir, path, 'targets has dtype float32, expected integer token ids', 'test-clean', 2
    )
    targets[3] = ip.VOCAB_SIZE
    np.save(path, targets)
    _refused(data_dir, path, r'targets holds 1024, outside \[0, 1024\)', 'test-clean', 2)
    targets[3] = -1
    np.save(path, targets)
    _refused(data_dir, path, r'targets holds -1', 'test-clean', 2)


def test_binary_or_malformed_csv_is_refused_naming_it(data_dir):
    csv = data_dir / 'dev-other.csv'
    csv.write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe')
    with pytest.raises(DataError, match='dev-other.csv: not a UTF-8 CSV text file') as e:
        ip.validate(str(data_dir))
    assert '\n' not in str(e.value)
    csv.write_text(',id\n0,100-7-0000\n1\n')
    with pytest.raises(DataError, match=r'dev-other.csv:3: expected "<index>,<utterance id>"'):
        ip.split_ids(str(data_dir), 'validation')
    csv.write_text(',id\n0,../../etc/x\n')
    with pytest.raises(DataError, match='dev-other.csv:2'):
        ip.split_ids(str(data_dir), 'validation')


def test_a_bad_later_example_reaches_the_consumer_as_one_line(data_dir):
    path = _example(data_dir, 'dev-other', 2)
    np.save(path, np.load(path).astype(np.float64))
    wl = registry.get_workload('librispeech_conformer', runtime=Runtime(torch.device('cpu')))
    wl.validate_data_dir(str(data_dir))  # Only the first example of each subset is read here.
    ids = ip.split_ids(str(data_dir), 'validation')
    plan = ip.eval_plan(len(ids), 3, 0, 1)
    queue = ip.BatchQueue(str(data_dir), ids, lambda: iter(plan), cycle=False)
    with pytest.raises(DataError, match=f'{path}: audio has dtype float64') as e:
        list(queue)
    assert '\n' not in str(e.value)


def test_run_exits_2_with_one_line_naming_the_file(data_dir, tmp_path, capsys):
    path = _example(data_dir, 'train-clean-360', 0, 'targets')
    np.save(path, np.full(5, 5000, dtype=np.int32))
    line = run_refused_line('librispeech_conformer', data_dir, tmp_path, capsys, name='ls')
    assert str(path) in line and 'outside [0, 1024)' in line, line


def test_the_layout_passes(data_dir):
    ip.validate(str(data_dir))
    audio, targets = ip.load_example(str(data_dir), 'test-clean/101-7-0001')
    assert audio.dtype == np.int64 and targets.dtype == np.int32
    assert ip.VOCAB_SIZE == 1024
