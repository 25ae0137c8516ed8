"""WMT data: `algoperf data wmt` on a generated parallel corpus, the reader, and a run.

Packed train batches are compared with `_reference_pack`, a plain per-example port of
upstream's `pack_dataset` / `_pack_with_tf_ops` (chunks of 256 examples, greedy rows,
padding strip by non-zero count, positions and segment ids) applied to the same example
stream; eval batches with sentences padded one per row; the conversion with the corpus
text, decoded back with the trained SentencePiece model.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
import sentencepiece as spm
import torch

from algoperf import cli, registry, spec
from algoperf.runtime import Runtime
from workloads.wmt import input_pipeline as ip
from workloads.wmt import models
from workloads.wmt import workload as wmt
from workloads.wmt.fixture import write_wmt_fixture

VOCAB = 100
SUBMISSION = 'tests/data/submissions/small_batch_nadamw.py'  # Batch 64 rows.
SMALL = {'ntoken': 128, 'd_model': 32, 'nhead': 4, 'd_hid': 32, 'nlayers': 2}
CPU = Runtime(torch.device('cpu'))


def _convert(raw, data, *extra):
    return cli.main(
        ['data', 'wmt', f'--raw_dir={raw}', f'--data_dir={data}', f'--vocab_size={VOCAB}', *extra]
    )


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('wmt')
    pairs = write_wmt_fixture(str(root / 'raw'), seed=5)
    assert _convert(root / 'raw', root / 'data') == 0
    return root, pairs


def _kept(pairs):
    return [p for p in pairs if p[0] and p[1]]


# ---- conversion --------------------------------------------------------------------------------
def test_conversion_round_trips_every_sentence_with_eos_and_skips_empty_pairs(corpus):
    root, pairs = corpus
    data = root / 'data'
    meta = json.loads((data / ip.DATASET_DIR / 'format.json').read_text())
    assert meta['pairs'] == {'train': 399, 'validation': 37, 'test': 41}  # One empty pair skipped.
    assert meta['vocab_size'] == VOCAB and meta['ids'] == {'unk': 0, 'bos': 1, 'eos': 2, 'pad': -1}
    sp = spm.SentencePieceProcessor(model_file=str(data / ip.VOCAB_FILE))
    for split in ip.SPLITS:
        tokens = ip.load_split(str(data), split)
        assert tokens.tokens['inputs'].dtype == np.uint16
        expected = _kept(pairs[split])
        assert len(tokens) == len(expected)
        for i, (de, en) in enumerate(expected):
            for key, text in (('inputs', de), ('targets', en)):
                ids = tokens.sentence(key, i).tolist()
                assert ids[-1] == ip.EOS_ID and ip.EOS_ID not in ids[:-1]
                assert ids[:-1] == sp.encode(text) and sp.decode(ids) == text
    # The 400-word pairs are filtered (longer side > 256 tokens); nothing else is.
    train = ip.load_split(str(data), 'train')
    long = np.maximum(train.lengths['inputs'], train.lengths['targets']) > 256
    assert long.sum() == 3 and len(train.kept) == 396
    np.testing.assert_array_equal(train.kept, np.flatnonzero(~long))


def test_sgm_files_and_a_given_model_give_the_same_arrays(corpus, tmp_path):
    root, _ = corpus
    write_wmt_fixture(str(tmp_path / 'raw'), seed=5, sgm=True)
    assert sorted(os.listdir(tmp_path / 'raw'))[:2] == ['test.de.sgm', 'test.en.sgm']
    model = root / 'data' / ip.VOCAB_FILE
    assert _convert(tmp_path / 'raw', tmp_path / 'data', f'--spm_model={model}') == 0
    for split in ip.SPLITS:
        a = ip.load_split(str(root / 'data'), split)
        b = ip.load_split(str(tmp_path / 'data'), split)
        for key in ip.KEYS:
            np.testing.assert_array_equal(a.tokens[key], b.tokens[key])
            np.testing.assert_array_equal(a.offsets[key], b.offsets[key])


def test_errors_name_the_file_and_write_nothing(corpus, tmp_path, capsys):
    root, _ = corpus
    assert _convert(root / 'raw', root / 'data') == 2
    assert '--overwrite' in capsys.readouterr().err
    bad = tmp_path / 'raw'
    write_wmt_fixture(str(bad), seed=1, split_pairs={'train': 50, 'validation': 5, 'test': 5})
    with open(bad / 'validation.en', 'a', encoding='utf-8') as f:
        f.write('One line too many.\n')
    assert _convert(bad, tmp_path / 'out') == 2
    err = capsys.readouterr().err
    assert f'{bad / "validation.en"}: 6 lines but {bad / "validation.de"} has 5' in err
    assert err.count('\n') == 1 and not (tmp_path / 'out').exists()
    os.remove(bad / 'test.de')
    assert _convert(bad, tmp_path / 'out') == 2
    assert 'test.de: not found' in capsys.readouterr().err and not (tmp_path / 'out').exists()
    # The reader: a stale model (not the one the arrays were tokenized with) is refused.
    copy = tmp_path / 'copy'
    write_wmt_fixture(
        str(tmp_path / 'raw2'), seed=2, split_pairs={'train': 80, 'validation': 5, 'test': 5}
    )
    assert _convert(tmp_path / 'raw2', copy, '--vocab_size=60') == 0
    os.replace(root / 'data' / ip.VOCAB_FILE, tmp_path / 'saved')
    try:
        (root / 'data' / ip.VOCAB_FILE).write_bytes((copy / ip.VOCAB_FILE).read_bytes())
        with pytest.raises(ValueError, match='not the SentencePiece model'):
            ip.load_split(str(root / 'data'), 'train')
    finally:
        os.replace(tmp_path / 'saved', root / 'data' / ip.VOCAB_FILE)
    with pytest.raises(FileNotFoundError, match='format.json not found'):
        wmt.WmtWorkload(runtime=CPU).validate_data_dir(str(tmp_path))


# ---- packing -----------------------------------------------------------------------------------
def _reference_pack(examples, length=256):
    """Upstream's `_pack_with_tf_ops` on chunks of `length` examples: (inputs, targets) id
    lists -> packed rows {key: [length]} with `_position` and `_segmentation` keys."""
    rows = []
    for c in range(0, len(examples), length):
        partial = {k: [] for k in ('inputs', 'targets', 'inputs_position', 'targets_position')}

        def flush(partial):
            row = {k: v + [0] * (length - len(v)) for k, v in partial.items()}
            for k in ('inputs', 'targets'):
                starts = np.cumsum(np.array(row[k + '_position']) == 0)
                row[k + '_segmentation'] = (starts * (np.array(row[k]) != 0)).tolist()
            rows.append(row)

        for inputs, targets in examples[c : c + length]:
            # padded_batch then `val[:count_nonzero(val)]`.
            one = {
                'inputs': inputs[: np.count_nonzero(inputs)],
                'targets': targets[: np.count_nonzero(targets)],
            }
            if any(len(partial[k]) + len(one[k]) > length for k in one):
                flush(partial)
                partial = {k: [] for k in partial}
            for k, seq in one.items():
                partial[k] += list(seq)
                partial[k + '_position'] += list(range(len(seq)))
        flush(partial)
    return rows


def _stream(split, seed, epochs):
    order = ip.train_order(split, seed)
    ids = np.concatenate([next(order) for _ in range(epochs)])
    return [
        (split.sentence('inputs', i).tolist(), split.sentence('targets', i).tolist()) for i in ids
    ]


def test_train_batches_equal_upstreams_packing_of_the_shuffled_stream(corpus):
    root, _ = corpus
    split = ip.load_split(str(root / 'data'), 'train')
    rows = _reference_pack(_stream(split, 7, 3))
    n = 4
    # Chunks of 256 run across epoch ends; only whole chunks are compared.
    whole = (3 * len(split.kept)) // 256 * 256
    complete = len(_reference_pack(_stream(split, 7, 3)[:whole]))
    batches = ip.train_batches(split, seed=7, global_batch_size=n)
    for b in range(complete // n):
        batch = next(batches)
        assert list(batch) == list(ip.TRAIN_KEYS)
        for r in range(n):
            ref = rows[b * n + r]
            for key in ip.TRAIN_KEYS[:-1]:
                assert batch[key][r].tolist() == ref[key], (b, r, key)
        assert torch.equal(batch['weights'], (batch['targets'] > 0).long())
        assert all(v.shape == (n, 256) and v.dtype == torch.int64 for v in batch.values())
    other = next(ip.train_batches(split, seed=8, global_batch_size=n))
    assert not torch.equal(other['inputs'], next(ip.train_batches(split, 7, n))['inputs'])


def test_packed_rows_hold_whole_sentences_and_are_full(corpus):
    root, _ = corpus
    split = ip.load_split(str(root / 'data'), 'train')
    sentences = {
        (tuple(split.sentence('inputs', i)), tuple(split.sentence('targets', i)))
        for i in split.kept
    }
    batch = next(ip.train_batches(split, seed=0, global_batch_size=16))
    for r in range(16):
        segments = batch['inputs_segmentation'][r]
        count = int(segments.max())
        assert count == int(batch['targets_segmentation'][r].max()) >= 1
        for s in range(1, count + 1):
            pair = []
            for key in ip.KEYS:
                mask = batch[f'{key}_segmentation'][r] == s
                pos = batch[f'{key}_position'][r][mask]
                assert pos.tolist() == list(range(int(mask.sum())))  # Contiguous, from 0.
                pair.append(tuple(batch[key][r][mask].tolist()))
            assert tuple(pair) in sentences  # A whole pair, never split across rows.


def test_packing_strips_at_the_nonzero_count_like_upstream(tmp_path):
    # Pair 0 holds an unk (id 0): upstream keeps its first count_nonzero tokens.
    inputs = [[5, 0, 7, 2], [9, 9, 2]]
    targets = [[4, 2], [3, 0, 2]]
    for key, sents in (('inputs', inputs), ('targets', targets)):
        np.save(
            tmp_path / f'{key}_tokens.npy', np.array([t for s in sents for t in s], dtype=np.uint16)
        )
        np.save(tmp_path / f'{key}_offsets.npy', np.cumsum([0] + [len(s) for s in sents]))
    split = ip.TokenSplit(str(tmp_path))
    batch = ip.materialize_packed(split, [np.array([0, 1])])
    ref = _reference_pack(list(zip(inputs, targets)))[0]
    for key in ip.TRAIN_KEYS[:-1]:
        assert batch[key][0].tolist() == ref[key], key
    assert batch['inputs'][0, :5].tolist() == [5, 0, 7, 9, 9]
    assert batch['inputs_segmentation'][0, :6].tolist() == [1, 0, 1, 2, 2, 2]
    assert batch['targets_segmentation'][0, :4].tolist() == [1, 1, 2, 0]


# ---- ranks and eval ----------------------------------------------------------------------------
def test_each_rank_reads_its_rows_of_every_global_batch(corpus):
    root, _ = corpus
    data = str(root / 'data')
    train = ip.load_split(data, 'train')
    whole = ip.train_batches(train, 3, 6)
    ranks = [ip.train_batches(train, 3, 6, rank=r, world_size=3) for r in range(3)]
    for _ in range(4):
        full = next(whole)
        for r in range(3):
            mine = next(ranks[r])
            for key in ip.TRAIN_KEYS:
                assert torch.equal(mine[key], full[key][2 * r : 2 * r + 2])
    val = ip.load_split(data, 'validation')
    ids = ip.eval_ids(val, 'validation', 0, None)
    single = ip.eval_batches(val, ids, 8)
    per_rank = [ip.eval_batches(val, ids, 8, rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(per_rank[0]) == len(per_rank[1]) == 5
    for k, full in enumerate(single):
        for r in range(2):
            for key in ip.EVAL_KEYS:
                assert torch.equal(per_rank[r][k][key], full[key][4 * r : 4 * r + 4])


def test_eval_batches_pad_sentences_and_the_last_global_batch(corpus):
    root, _ = corpus
    val = ip.load_split(str(root / 'data'), 'validation')
    ids = ip.eval_ids(val, 'validation', 0, None)
    np.testing.assert_array_equal(ids, np.arange(37))
    batches = ip.eval_batches(val, ids, 8)
    assert len(batches) == 5 and all(list(b) == list(ip.EVAL_KEYS) for b in batches)
    rows = {k: torch.cat([b[k] for b in batches]) for k in ip.EVAL_KEYS}
    assert rows['inputs'].shape == (40, 256)
    for i in range(37):
        for key in ip.KEYS:
            s = val.sentence(key, i).tolist()
            assert rows[key][i].tolist() == s + [0] * (256 - len(s))
    assert not rows['inputs'][37:].any() and not rows['weights'][37:].any()
    assert torch.equal(rows['weights'], (rows['targets'] > 0).long())
    train = ip.load_split(str(root / 'data'), 'eval_train')
    a, b = ip.eval_ids(train, 'eval_train', 4, 20), ip.eval_ids(train, 'eval_train', 4, 20)
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) <= set(train.kept.tolist()) and len(set(a.tolist())) == 20


# ---- workload ----------------------------------------------------------------------------------
def _small_workload():
    wl = registry.get_workload('wmt', runtime=CPU)
    wl._build_model = lambda: models.Transformer(**SMALL)
    return wl


def test_workload_queues_tokenizer_and_eval_with_bleu(corpus):
    root, pairs = corpus
    data = str(root / 'data')
    wl = _small_workload()
    wl.validate_data_dir(data)
    _, en = _kept(pairs['validation'])[0]
    ids = wl._tokenizer.encode(en) + [ip.EOS_ID, 0, 0]
    assert wl._decode_tokens(torch.tensor(ids)) == en
    queue = wl._build_input_queue([1, 0], 'validation', data, 16, num_batches=3)
    assert queue.batches_per_pass == 3
    first = [next(queue) for _ in range(3)]
    assert torch.equal(next(queue)['inputs'], first[0]['inputs'])  # The pass cycles.
    model, _ = wl.init_model_fn([0, 0])
    train = next(wl._build_input_queue([1, 0], 'train', data, 2))
    logits, _ = wl.model_fn(model, train, None, spec.ForwardPassMode.TRAIN, None, False)
    loss = wl.loss_fn(train['targets'], logits, train['weights'])
    assert logits.shape == (2, 256, SMALL['ntoken']) and torch.isfinite(loss['summed'])
    assert loss['n_valid_examples'] == train['weights'].sum()
    # A short decode keeps the test fast; the metric path is the real one.
    wl.max_predict_length = 8
    result = wl._eval_model_on_split('test', 41, 32, model, None, [0, 0], data)
    assert wl._eval_iters['test'].batches_per_pass == 2
    assert set(result) == {'loss', 'accuracy', 'bleu'}
    assert np.isfinite(result['loss']) and 0 <= result['accuracy'] <= 1 and result['bleu'] >= 0


def test_baseline_trains_on_the_converted_fixture_through_the_runner(corpus, tmp_path, monkeypatch):
    # A 2-layer, 32-wide model: the 133M-parameter one takes minutes per step at batch 64
    # on a CPU. Evals are skipped (beam search over 256 positions); see the test above.
    root, _ = corpus
    monkeypatch.setattr(wmt.WmtWorkload, '_build_model', lambda self: models.Transformer(**SMALL))
    code = cli.main([
        'run', '--workload=wmt', f'--submission_path={SUBMISSION}', '--tuning_ruleset=self',
        f'--data_dir={root / "data"}', f'--experiment_dir={tmp_path}', '--experiment_name=wmt',
        '--noprogress', '--max_global_steps=2', '--skip_evals=true', '--save_checkpoints=false',
        '--rng_seed=2', '--torch_compile=false',
    ])  # fmt: skip
    assert code == 0
    trial = tmp_path / 'wmt' / 'wmt_pytorch' / 'trial_1'
    assert json.loads((trial / 'result.json').read_text())['status'] == 'max_global_steps'
    losses = pd.read_csv(trial / 'measurements.csv')['loss'].dropna().astype(float)
    assert len(losses) == 2 and np.isfinite(losses).all() and (losses > 0).all()
