"""LibriSpeech: `algoperf data librispeech_*` on a tiny FLAC release, the reader, and a runner smoke test."""

import json
import os
import random

import numpy as np
import pandas as pd
import pytest
import sentencepiece as spm
import torch

from algoperf import cli, registry
from algoperf.runtime import Runtime
from workloads.librispeech_conformer import convert
from workloads.librispeech_conformer import input_pipeline as ip
from workloads.librispeech_conformer.fixture import write_librispeech_fixture
from workloads.librispeech_deepspeech import models as ds_models

VOCAB = 40  # The fixture's transcripts cannot support upstream's 1024.
SUBMISSION = 'tests/data/submissions/tiny_batch_nadamw.py'  # Global batch 2.


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp('librispeech')
    written = write_librispeech_fixture(str(root / 'raw'), seed=3, over_limit=True)
    args = [f'--raw_dir={root / "raw"}', f'--data_dir={root / "data"}', f'--vocab_size={VOCAB}']
    assert cli.main(['data', 'librispeech_conformer', *args]) == 0
    return root / 'data', written


def _runtime(rank=0, world=1):
    return Runtime(torch.device('cpu'), rank=rank, world_size=world)


def test_conversion_writes_upstreams_layout_and_tokens_decode_back(converted):
    data_dir, written = converted
    sp = spm.SentencePieceProcessor(model_file=str(data_dir / ip.TOKENIZER_FILE))
    assert sp.vocab_size() == VOCAB
    for subset in ip.SUBSETS:
        csv = pd.read_csv(data_dir / f'{subset}.csv')
        assert list(csv.columns) == ['Unnamed: 0', 'id']  # pandas index + `id`.
        expected = dict(written[subset])
        assert sorted(csv['id']) == sorted(expected)
        for utt in csv['id']:
            audio = np.load(data_dir / subset / f'{utt}_audio.npy')
            targets = np.load(data_dir / subset / f'{utt}_targets.npy')
            assert audio.dtype == np.int64 and audio.ndim == 1 and 0 < len(audio) <= 320_000
            assert targets.dtype == np.int32 and targets[-1] == sp.eos_id()
            assert sp.decode(targets.tolist()) == expected[utt]
            assert ip.Detokenizer(str(data_dir / ip.TOKENIZER_FILE))(targets) == expected[utt]
    # The over-limit transcript and audio were dropped, as upstream's preprocessing does.
    over = {utt for utt, _ in written['train-clean-100/over_limit']}
    assert not over & set(pd.read_csv(data_dir / 'train-clean-100.csv')['id'])


def test_missing_dir_and_corrupt_flac_name_the_file_and_write_nothing(tmp_path, capsys):
    out = tmp_path / 'out'
    assert cli.main(['data', 'librispeech_deepspeech', f'--raw_dir={tmp_path / "nope"}',
                     f'--data_dir={out}']) == 2  # fmt: skip
    assert 'nope' in capsys.readouterr().err and not out.exists()

    raw = tmp_path / 'raw'
    write_librispeech_fixture(str(raw), seed=1)
    bad = raw / 'LibriSpeech' / 'dev-other' / '140' / '1001' / '140-1001-0003.flac'
    bad.write_bytes(b'fLaC' + b'\x00' * 64)
    with pytest.raises(ValueError, match='140-1001-0003.flac'):
        convert.convert(str(raw), str(out), vocab_size=VOCAB, log=lambda m: None)
    assert not out.exists() and os.listdir(tmp_path) == ['raw']  # No temp dir left either.

    os.remove(bad)
    with pytest.raises(FileNotFoundError, match='140-1001-0003.flac'):
        convert.convert(str(raw), str(out), vocab_size=VOCAB, log=lambda m: None)
    assert sorted(os.listdir(tmp_path)) == ['raw']


def test_validate_data_dir(converted, tmp_path):
    data_dir, _ = converted
    wl = registry.get_workload('librispeech_conformer', runtime=_runtime())
    wl.validate_data_dir(str(data_dir))
    with pytest.raises(FileNotFoundError, match='spm_model.vocab'):
        wl.validate_data_dir(str(tmp_path))


def _train_batches(data_dir, rank, world, n, count, seed=5):
    wl = registry.get_workload('librispeech_deepspeech', runtime=_runtime(rank, world))
    q = wl._build_input_queue([seed, 0], 'train', str(data_dir), global_batch_size=n * world)
    return [next(q) for _ in range(count)], wl


def test_train_batches_layout_and_rank_slices(converted):
    data_dir, _ = converted
    ids = ip.split_ids(str(data_dir), 'train')
    assert len(ids) == 24
    full, wl = _train_batches(data_dir, 0, 1, 4, 7)  # 6 batches per epoch, then epoch 2.
    b = full[0]
    audio, input_paddings = b['inputs']
    targets, target_paddings = b['targets']
    assert set(b) == {'inputs', 'targets'}
    assert audio.shape == input_paddings.shape == (4, 320_000) and audio.dtype == torch.float32
    assert targets.shape == target_paddings.shape == (4, 256) and targets.dtype == torch.float32
    lengths = (input_paddings == 0).sum(1)
    for i in range(4):  # Padding is a suffix; audio zero on it; values as stored.
        assert (input_paddings[i, : lengths[i]] == 0).all() and (
            input_paddings[i, lengths[i] :] == 1
        ).all()
        assert (audio[i, lengths[i] :] == 0).all()
        k = int((target_paddings[i] == 0).sum())
        assert (targets[i, k:] == 0).all() and (targets[i, :k] > 0).all()
    # An epoch is a permutation of the split: every example once in the first 6 batches.
    seen = sorted(tuple(x.tolist()) for x in torch.cat([f['inputs'][0][:, :8] for f in full[:6]]))
    assert len(set(seen)) == 24
    # The detokenizer now comes from the data.
    assert isinstance(wl.detokenize, ip.Detokenizer)
    # Ranks' slices concatenate to the global batch.
    parts = [_train_batches(data_dir, r, 2, 2, 7)[0] for r in range(2)]
    for step in range(7):
        for key in ('inputs', 'targets'):
            for j in range(2):
                joined = torch.cat([parts[r][step][key][j] for r in range(2)])
                assert torch.equal(joined, full[step][key][j])
    # Another seed, another order.
    other, _ = _train_batches(data_dir, 0, 1, 4, 1, seed=6)
    assert not torch.equal(other[0]['inputs'][0], full[0]['inputs'][0])


def test_eval_batches_are_padded_to_full_batches_and_cycled(converted):
    data_dir, _ = converted
    ids = ip.split_ids(str(data_dir), 'validation')  # dev-clean + dev-other: 12.
    assert len(ids) == 12 and ids[0].startswith('dev-clean/') and ids[-1].startswith('dev-other/')
    wl = registry.get_workload('librispeech_conformer', runtime=_runtime())
    q = wl._build_input_queue([1, 1], 'validation', str(data_dir), global_batch_size=5)
    assert q.batches_per_pass == 3
    first = [next(q) for _ in range(3)]
    assert [b['weights'].tolist() for b in first] == [[1.0] * 5, [1.0] * 5, [1, 1, 0, 0, 0]]
    assert torch.equal(next(q)['inputs'][0], first[0]['inputs'][0])  # Cycled.
    # Global batch 8 over 2 ranks: 2 global batches, the second padded (4 real of 8); the
    # ranks' slices concatenate to the single-process batches.
    single = wl._build_input_queue([1, 1], 'validation', str(data_dir), global_batch_size=8)
    ranks = [
        registry.get_workload('librispeech_conformer', runtime=_runtime(r, 2))._build_input_queue(
            [1, 1], 'validation', str(data_dir), global_batch_size=8
        )
        for r in range(2)
    ]
    assert single.batches_per_pass == ranks[0].batches_per_pass == ranks[1].batches_per_pass == 2
    for _ in range(2):
        whole, parts = next(single), [next(q) for q in ranks]
        for key in ('inputs', 'targets'):
            for j in range(2):
                assert torch.equal(torch.cat([p[key][j] for p in parts]), whole[key][j])
        assert torch.equal(torch.cat([p['weights'] for p in parts]), whole['weights'])
    assert whole['weights'].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def test_eval_train_is_upstreams_subset(converted):
    data_dir, _ = converted
    ids = ip.split_ids(str(data_dir), 'train')
    indices = list(range(len(ids)))
    random.Random(7).shuffle(indices)
    assert ip.eval_train_ids(ids, 7, 5) == [ids[i] for i in indices[:5]]


def test_eval_masks_padding_examples(converted):
    """WER and loss of a padded pass equal those of its real examples alone."""
    data_dir, _ = converted
    wl = registry.get_workload('librispeech_deepspeech', runtime=_runtime())
    small = wl._model_config(encoder_dim=32, num_lstm_layers=1, num_ffn_layers=1)
    wl._build_model = lambda: ds_models.DeepspeechEncoderDecoder(small)
    model, _ = wl.init_model_fn([0, 0])
    padded = wl._eval_model_on_split('test', 6, 4, model, None, [2, 2], str(data_dir))
    wl._eval_iters.clear()
    whole = wl._eval_model_on_split('test', 6, 6, model, None, [2, 2], str(data_dir))
    assert padded['wer'] == pytest.approx(whole['wer'])
    assert padded['ctc_loss'] == pytest.approx(whole['ctc_loss'], rel=1e-5)


@pytest.mark.parametrize('workload', ['librispeech_deepspeech', 'librispeech_conformer'])
def test_baseline_trains_on_the_converted_fixture_through_the_runner(converted, tmp_path, workload):
    data_dir, _ = converted
    code = cli.main([
        'run', f'--workload={workload}', f'--submission_path={SUBMISSION}',
        '--tuning_ruleset=self', f'--data_dir={data_dir}', f'--experiment_dir={tmp_path}',
        '--experiment_name=ls', '--noprogress', '--max_global_steps=2', '--skip_evals=true',
        '--save_checkpoints=false', '--rng_seed=2', '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = next((tmp_path / 'ls').glob('*/trial_1'))
    assert json.loads((trial / 'result.json').read_text())['status'] == 'max_global_steps'
    losses = pd.read_csv(trial / 'measurements.csv')['loss'].dropna().astype(float)
    assert len(losses) == 2 and np.isfinite(losses).all() and (losses > 0).all()
