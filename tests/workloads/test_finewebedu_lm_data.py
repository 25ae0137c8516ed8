"""FineWeb-Edu data: `algoperf data finewebedu_lm` on both input layouts, and the window reader.

The corpus is `workloads/finewebedu_lm/fixture.py`'s: texts made here, a byte-level BPE
trained here with `tokenizers` (and a tiktoken ranks file made here), never a download.
Conversions are checked against the tokenizers' own encodings (and decodings back to the
text), documents split as HF `Dataset.train_test_split(test_size, seed)` does (written out
independently below from its documented algorithm). Reader tests use a synthetic stream in
which every window is identified by its first token.
"""

import base64
import hashlib
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from algoperf import cli, data_cli
from algoperf.errors import DataError
from workloads.finewebedu_lm import convert
from workloads.finewebedu_lm import fixture as fx
from workloads.finewebedu_lm import input_pipeline as ip

tokenizers = pytest.importorskip('tokenizers')
tiktoken = pytest.importorskip('tiktoken')


# GPT-2's pattern as its release wrote it (tiktoken's r50k_pat_str is an equivalent rewrite).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _convert(*flags):
    return cli.main(['data', 'finewebedu_lm', *map(str, flags)])


def _stream(data_dir, split):
    meta = json.loads((data_dir / ip.DATASET_DIR / 'format.json').read_text())
    path = data_dir / ip.DATASET_DIR / meta['splits'][split]['file']
    return np.fromfile(path, dtype='<u2'), meta


def _hf_split_order(n, test_size, seed):
    """HF `train_test_split`: permutation by default_rng(seed); test = its first ceil(t·n)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = math.ceil(test_size * n)
    return {'validation': perm[:n_test].tolist(), 'train': perm[n_test:].tolist()}


def _read_ranks(path):
    """A tiktoken ranks file read here (tiktoken's loader caches by path under /tmp)."""
    lines = open(path, 'rb').read().splitlines()
    return {base64.b64decode(t): int(r) for t, r in (line.split() for line in lines)}


def _split_at_eos(tokens, eos):
    ends = np.flatnonzero(tokens == eos)
    assert len(ends) and ends[-1] == len(tokens) - 1  # The stream ends with a document's EOS.
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends)]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('finewebedu')
    texts = fx.documents(seed=3)
    tok = fx.train_tokenizer(texts, str(root / 'tok' / 'tokenizer.json'))
    ranks = fx.write_tiktoken_ranks(texts, str(root / 'tok' / 'gpt2-like.tiktoken'))
    fx.write_raw_shards(texts, str(root / 'parquet'), 'parquet', num_shards=3)
    fx.write_raw_shards(texts, str(root / 'jsonl'), 'jsonl', num_shards=2)
    return root, texts, tok, ranks


@pytest.fixture(scope='module')
def parquet_data(corpus):
    """The parquet shards converted with the tokenizers tokenizer (default 90/10, seed 42)."""
    root, _, tok_path, _ = corpus
    data = root / 'from_parquet'
    assert _convert('--raw_dir', root / 'parquet', '--tokenizer', tok_path, '--data_dir', data) == 0
    return data


# ---- conversion --------------------------------------------------------------------------------
def test_raw_parquet_round_trip_with_a_locally_trained_tokenizer(corpus, parquet_data):
    root, texts, tok_path, _ = corpus
    data = parquet_data
    tok = tokenizers.Tokenizer.from_file(tok_path)
    eos = tok.token_to_id(fx.EOS_TOKEN)
    assert eos == tok.get_vocab_size() - 1  # Added last, as GPT-2's 50256.
    order = _hf_split_order(len(texts), 0.1, 42)
    for split, docs in order.items():
        tokens, meta = _stream(data, split)
        encoded = [tok.encode(texts[i]).ids for i in docs]
        assert _split_at_eos(tokens, eos) == encoded  # Each document + one EOS, in split order.
        assert [tok.decode(ids) for ids in encoded] == [texts[i] for i in docs]
        entry = meta['splits'][split]
        assert entry['tokens'] == len(tokens) == sum(map(len, encoded)) + len(docs)
        assert entry['documents'] == len(docs) and entry['windows'] == len(tokens) // 1025
        path = data / ip.DATASET_DIR / entry['file']
        assert entry['sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta['eos_id'] == eos and meta['source']['eos_appended'] is True
    # The shard-order scratch stream is gone; nothing beside the output.
    assert sorted(os.listdir(data / ip.DATASET_DIR)) == [
        'format.json',
        'train.bin',
        'validation.bin',
    ]
    assert os.listdir(data) == [ip.DATASET_DIR]
    ip.validate_data_dir(str(data))


def test_raw_jsonl_with_tiktoken_ranks_and_the_same_stream_from_either_shard_format(
    corpus, tmp_path
):
    root, texts, tok_path, ranks = corpus
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert (
        _convert(
            '--raw_dir',
            root / 'jsonl',
            '--tokenizer',
            ranks,
            '--data_dir',
            a,
            '--val_fraction=0.25',
            '--split_seed=7',
        )
        == 0
    )
    tokens, meta = _stream(a, 'train')
    eos = meta['eos_id']
    ranks_count = len((root / 'tok' / 'gpt2-like.tiktoken').read_text().splitlines())
    assert eos == ranks_count  # EOS = the id after the last rank, as GPT-2's.
    enc = tiktoken.Encoding(
        'check',
        pat_str=GPT2_PATTERN,
        mergeable_ranks=_read_ranks(ranks), special_tokens={fx.EOS_TOKEN: eos},
    )  # fmt: skip
    order = _hf_split_order(len(texts), 0.25, 7)
    for split, docs in order.items():
        tokens, _ = _stream(a, split)
        docs_tokens = _split_at_eos(tokens, eos)
        assert docs_tokens == [enc.encode(texts[i]) for i in docs]
        assert [enc.decode(ids) for ids in docs_tokens] == [texts[i] for i in docs]
    # jsonl vs parquet shards (3 vs 2 files): the same documents, so the same streams.
    for shards, out in (('jsonl', a / 'tok'), ('parquet', b)):
        assert _convert('--raw_dir', root / shards, '--tokenizer', tok_path, '--data_dir', out) == 0
    for split in ('train', 'validation'):
        np.testing.assert_array_equal(_stream(a / 'tok', split)[0], _stream(b, split)[0])


def test_hf_save_to_disk_layout_is_copied_as_stored(corpus, tmp_path, capsys):
    root, texts, tok_path, _ = corpus
    tok = tokenizers.Tokenizer.from_file(tok_path)
    eos = tok.token_to_id(fx.EOS_TOKEN)
    order = _hf_split_order(len(texts), 0.1, 42)
    rows = {
        'train': [tok.encode(texts[i]).ids + [eos] for i in order['train']],
        'val': [tok.encode(texts[i]).ids + [eos] for i in order['validation']],
    }
    fx.write_hf_layout(rows, str(tmp_path / 'hf'), files_per_split=2)
    data = tmp_path / 'data'
    assert _convert('--hf_dir', tmp_path / 'hf', '--data_dir', data, f'--eos_id={eos}') == 0
    assert 'do not end with EOS' not in capsys.readouterr().out
    for split, sub in (('train', 'train'), ('validation', 'val')):
        tokens, meta = _stream(data, split)
        assert tokens.tolist() == [t for row in rows[sub] for t in row]
        assert meta['splits'][split]['rows_ending_with_eos'] == len(rows[sub])
    assert meta['source']['eos_appended'] is False
    # The same documents from raw text give the same streams.
    raw = tmp_path / 'raw'
    assert _convert('--raw_dir', root / 'parquet', '--tokenizer', tok_path, '--data_dir', raw) == 0
    for split in ('train', 'validation'):
        np.testing.assert_array_equal(_stream(data, split)[0], _stream(raw, split)[0])
    # Pre-chunked rows (upstream's early 2049-token version) are kept as they are, noted.
    flat = [t for row in rows['train'] for t in row]
    chunked = {'train': [flat[i : i + 2049] for i in range(0, len(flat), 2049)], 'val': rows['val']}
    fx.write_hf_layout(chunked, str(tmp_path / 'hf2'), files_per_split=1)
    assert (
        _convert('--hf_dir', tmp_path / 'hf2', '--data_dir', tmp_path / 'd2', f'--eos_id={eos}')
        == 0
    )
    assert 'rows in' in capsys.readouterr().out
    assert _stream(tmp_path / 'd2', 'train')[0].tolist() == flat


def _assert_one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('algoperf data finewebedu_lm: error: '), err
    for needle in needles:
        assert str(needle) in err, err


def _nothing_written(data_dir):
    return not os.path.exists(data_dir) or not [
        n for n in os.listdir(data_dir) if n.startswith(ip.DATASET_DIR)
    ]


def test_errors_are_one_line_naming_the_file_exit_2_and_write_nothing(corpus, tmp_path, capsys):
    root, texts, tok_path, _ = corpus
    out = tmp_path / 'out'
    good = [[1, 2, 3, 4] * 300, [5, 6, 7] * 400]

    def hf(name, train_rows, val_rows=good):
        fx.write_hf_layout({'train': train_rows, 'val': val_rows}, str(tmp_path / name), 2)
        return tmp_path / name

    # A non-token column: no input_ids at all, or input_ids holding strings.
    bad = hf('text_column', good)
    fx.write_arrow_rows(
        str(bad / 'train' / 'data-00001-of-00002.arrow'), [['a', 'b']], 'text', pa.string()
    )
    assert _convert('--hf_dir', bad, '--data_dir', out) == 2
    _assert_one_line_error(
        capsys, bad / 'train' / 'data-00001-of-00002.arrow', 'no input_ids column (columns: text)'
    )
    bad = hf('string_ids', good)
    fx.write_arrow_rows(
        str(bad / 'val' / 'data-00000-of-00002.arrow'), [['1', '2']], 'input_ids', pa.string()
    )
    assert _convert('--hf_dir', bad, '--data_dir', out) == 2
    _assert_one_line_error(
        capsys, bad / 'val' / 'data-00000-of-00002.arrow', 'not a list of integer token ids'
    )
    # Ids past the vocabulary (in the second file: the first one was already copied).
    bad = hf('big_ids', good + [[7, 8, ip.VOCAB_SIZE, 9]])
    assert _convert('--hf_dir', bad, '--data_dir', out) == 2
    _assert_one_line_error(
        capsys, bad / 'train' / 'data-00001-of-00002.arrow', 'row 1: token id 50257'
    )
    # An empty shard, in either layout.
    bad = hf('empty', good)
    fx.write_arrow_rows(str(bad / 'val' / 'data-00001-of-00002.arrow'), [])
    assert _convert('--hf_dir', bad, '--data_dir', out) == 2
    _assert_one_line_error(capsys, bad / 'val' / 'data-00001-of-00002.arrow', 'empty shard')
    raw = tmp_path / 'raw_empty'
    fx.write_raw_shards(texts[:20], str(raw), 'jsonl', 2)
    (raw / '002_00000.jsonl').write_text('\n')
    assert _convert('--raw_dir', raw, '--tokenizer', tok_path, '--data_dir', out) == 2
    _assert_one_line_error(capsys, raw / '002_00000.jsonl', 'empty shard')
    raw = tmp_path / 'raw_empty_pq'
    fx.write_raw_shards(texts[:20], str(raw), 'parquet', 1)
    pq.write_table(pa.table({'text': pa.array([], pa.string())}), raw / '001_00000.parquet')
    assert _convert('--raw_dir', raw, '--tokenizer', tok_path, '--data_dir', out) == 2
    _assert_one_line_error(capsys, raw / '001_00000.parquet', 'empty shard')
    # Non-UTF-8 jsonl (found mid-conversion, after the first shard was tokenized).
    raw = tmp_path / 'raw_latin1'
    fx.write_raw_shards(texts[:20], str(raw), 'jsonl', 2)
    with open(raw / '001_00000.jsonl', 'ab') as f:
        f.write('{"text": "caf\u00e9"}\n'.encode('latin-1'))
    assert _convert('--raw_dir', raw, '--tokenizer', tok_path, '--data_dir', out) == 2
    _assert_one_line_error(capsys, raw / '001_00000.jsonl', 'line 11: not UTF-8')
    # Parquet without a text column.
    raw = tmp_path / 'raw_no_text'
    os.makedirs(raw)
    pq.write_table(pa.table({'content': ['a b c']}), raw / 'shard.parquet')
    assert _convert('--raw_dir', raw, '--tokenizer', tok_path, '--data_dir', out) == 2
    _assert_one_line_error(capsys, raw / 'shard.parquet', 'no text column')
    # Tokenizer: missing, or a vocabulary larger than the model's.
    assert (
        _convert(
            '--raw_dir', root / 'parquet', '--tokenizer', tmp_path / 'nope.json', '--data_dir', out
        )
        == 2
    )
    _assert_one_line_error(capsys, f'--tokenizer={tmp_path / "nope.json"}: not found')
    big = tmp_path / 'big.tiktoken'
    big.write_text(
        ''.join(f'{base64.b64encode(bytes([b])).decode()} {b}\n' for b in range(256))
        + 'YWI= 60000\n'
    )
    assert _convert('--raw_dir', root / 'parquet', '--tokenizer', big, '--data_dir', out) == 2
    _assert_one_line_error(capsys, big, 'vocabulary of 60,002 ids')
    assert _nothing_written(out)
    # Unwritable output: a path under a regular file.
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    assert (
        _convert(
            '--raw_dir', root / 'parquet', '--tokenizer', tok_path, '--data_dir', blocker / 'data'
        )
        == 2
    )
    _assert_one_line_error(capsys, f'--data_dir={blocker / "data"}: not writable')
    # An existing conversion is kept unless --overwrite.
    ok = hf('ok', good)
    assert _convert('--hf_dir', ok, '--data_dir', out) == 0
    before = _stream(out, 'train')[0]
    assert (
        _convert(
            '--hf_dir', hf('big2', good + [[ip.VOCAB_SIZE + 5]]), '--data_dir', out, '--overwrite'
        )
        == 2
    )
    capsys.readouterr()
    np.testing.assert_array_equal(_stream(out, 'train')[0], before)  # Failed overwrite: old kept.
    assert sorted(os.listdir(out)) == [ip.DATASET_DIR]
    assert _convert('--hf_dir', ok, '--data_dir', out) == 2
    _assert_one_line_error(capsys, 'exists; pass --overwrite')


def test_the_tool_is_found_by_workload_name():
    assert data_cli.tools()['finewebedu_lm'] == 'workloads.finewebedu_lm.convert:main'


# ---- reader ------------------------------------------------------------------------------------
def _synthetic(tmp_path, train_windows=60, val_windows=23, tail=100):
    """A data dir whose streams are `arange % 50000` (window i starts with 1025 i % 50000,
    unique for i < 2000); each split ends with `tail` extra tokens (dropped)."""

    def rows(n):
        flat = (np.arange(n * ip.WINDOW + tail) % 50_000).tolist()
        return [flat[i : i + 777] for i in range(0, len(flat), 777)]  # Rows cross windows.

    fx.write_hf_layout(
        {'train': rows(train_windows), 'val': rows(val_windows)}, str(tmp_path / 'hf'), 2
    )
    data = tmp_path / 'data'
    assert convert.main(['--hf_dir', str(tmp_path / 'hf'), '--data_dir', str(data)]) == 0
    return str(data)


def _window_id(row):
    first = int(row[0])
    assert first % 25 == 0  # 1025 i mod 50000 is a multiple of 25.
    return (first // 25) * pow(41, -1, 2000) % 2000  # 1025 i / 25 = 41 i (mod 2000).


def test_windows_cross_documents_and_targets_are_inputs_shifted_by_one(parquet_data):
    data = parquet_data
    tokens, meta = _stream(data, 'train')
    eos = meta['eos_id']
    stream = ip.load_stream(str(data), 'train')
    assert stream.num_windows == len(tokens) // 1025 == meta['splits']['train']['windows']
    batch = next(ip.eval_batches(str(data), 'eval_train', stream.num_windows))
    windows = tokens[: stream.num_windows * 1025].reshape(-1, 1025)
    assert batch['inputs'].dtype == torch.int32 and batch['targets'].dtype == torch.int64
    np.testing.assert_array_equal(batch['inputs'].numpy(), windows[:, :1024])
    np.testing.assert_array_equal(batch['targets'].numpy(), windows[:, 1:])
    inside = (batch['inputs'][:, 1:] == eos).sum(dim=1)
    assert (inside > 0).sum() >= stream.num_windows // 2  # Most windows span documents...
    assert (inside == 0).any()  # ...and the long documents fill whole windows.
    train = ip.make_train_iterator(str(data), seed=0, global_batch_size=8)
    b = next(train)
    torch.testing.assert_close(b['inputs'][:, 1:].long(), b['targets'][:, :-1], rtol=0, atol=0)
    assert b['weights'] is None and b['inputs'].shape == (8, 1024)
    train.close()


def test_train_shuffle_is_a_seeded_permutation_per_epoch(tmp_path):
    data = _synthetic(tmp_path)

    def epoch_ids(seed, epoch, batch=6):
        it = ip.make_train_iterator(data, seed, batch, prefetch=False)
        it.fast_forward(epoch * 60 // batch)
        return [_window_id(r) for _ in range(60 // batch) for r in next(it)['inputs']]

    first = epoch_ids(seed=1, epoch=0)
    assert sorted(first) == list(range(60))  # Every window once per epoch.
    assert first == epoch_ids(seed=1, epoch=0)  # Same seed, same order.
    assert first != epoch_ids(seed=2, epoch=0)  # Another seed, another order.
    second = epoch_ids(seed=1, epoch=1)
    assert sorted(second) == list(range(60)) and second != first  # A fresh order each epoch.
    assert first != list(range(60))
    # Batches run across the epoch end (60 windows, batch 7): still each window once per epoch.
    it = ip.make_train_iterator(data, 1, 7)
    ids = [_window_id(r) for _ in range(18) for r in next(it)['inputs']]
    assert ids[:60] == first and sorted(ids[60:120]) == list(range(60))
    it.close()


@pytest.mark.parametrize('world', [2, 3])
def test_ranks_batches_concatenate_to_the_global_batch_and_read_only_their_windows(
    tmp_path, world, monkeypatch
):
    data = _synthetic(tmp_path)
    whole = ip.make_train_iterator(data, 5, 12, prefetch=False)
    ranks = [ip.make_train_iterator(data, 5, 12, rank=r, world_size=world) for r in range(world)]
    read = {r: [] for r in range(world)}
    for r, it in enumerate(ranks):  # Record what each rank gathers from the memmap.
        original = it.stream.windows
        monkeypatch.setattr(
            it.stream, 'windows', lambda ids, r=r, f=original: read[r].append(ids) or f(ids)
        )
        it.fast_forward(0)  # Restart its prefetch thread with the recording gather.
    for _ in range(12):  # 144 windows: across two epoch ends.
        parts = [next(it) for it in ranks]
        expected = next(whole)
        assert all(p['inputs'].shape == (12 // world, 1024) for p in parts)
        for key in ('inputs', 'targets'):
            torch.testing.assert_close(
                torch.cat([p[key] for p in parts]), expected[key], rtol=0, atol=0
            )
    for r in range(world):
        assert all(len(ids) == 12 // world for ids in read[r][:12])
        it = ranks[r]
        it.close()
    mine = [set(np.concatenate(read[r][:1]).tolist()) for r in range(world)]
    assert sum(map(len, mine)) == 12 and len(set().union(*mine)) == 12  # Disjoint shares.


def test_fast_forward_resumes_at_the_same_batch(tmp_path):
    data = _synthetic(tmp_path)
    straight = ip.make_train_iterator(data, 9, 8)
    expected = [next(straight)['targets'] for _ in range(20)][13:]
    resumed = ip.make_train_iterator(data, 9, 8)
    next(resumed)
    resumed.fast_forward(12)  # Consumed 1, skip 12: the next is batch 13.
    for want in expected:
        torch.testing.assert_close(next(resumed)['targets'], want, rtol=0, atol=0)
    assert resumed.step == 20
    straight.close()
    resumed.close()


@pytest.mark.parametrize('world', [1, 2, 3])
@pytest.mark.parametrize('split,windows', [('validation', 23), ('eval_train', 60)])
def test_each_eval_window_is_counted_once_on_any_number_of_ranks(tmp_path, world, split, windows):
    data = _synthetic(tmp_path)
    for num_examples, expect in ((None, windows), (10, 12), (20, 24)):
        seen, passes = [], []
        for r in range(world):
            batches = list(
                ip.eval_batches(data, split, 6, rank=r, world_size=world, num_examples=num_examples)
            )
            passes.append(len(batches))
            for b in batches:
                assert b['weights'].dtype == torch.float32 and b['weights'].shape == (
                    6 // world,
                    1024,
                )
                for row_in, row_w in zip(b['inputs'], b['weights']):
                    if row_w[0] == 1:
                        assert (row_w == 1).all()
                        seen.append(_window_id(row_in))
                    else:  # Padding: valid ids (0) and no weight.
                        assert (row_w == 0).all() and (row_in == 0).all()
        covered = min(expect, windows)  # ceil(n / 6) whole batches (JAX), as far as the split goes.
        assert sorted(seen) == list(range(covered))  # Each once, from the split's start.
        assert len(set(passes)) == 1 and passes[0] == math.ceil(covered / 6)


def test_eval_padding_and_the_upstream_pass_sizes(tmp_path):
    data = _synthetic(tmp_path)
    batches = list(ip.eval_batches(data, 'validation', 6, rank=1, world_size=2))
    last = batches[-1]  # Windows 18..23 of 23: this rank holds rows 21, 22 and one padding row.
    assert last['weights'][:, 0].tolist() == [1.0, 1.0, 0.0]
    assert (last['targets'][2] == 0).all() and (last['inputs'][2] == 0).all()
    assert int(last['weights'].sum()) == 2 * 1024  # Token-count denominator of the real rows.
    # The JAX pass sizes of algoperf_v1.md §1.5 on a large enough split.
    assert ip.eval_num_windows(970_000, 256, ip.NUM_VALIDATION_EXAMPLES) == 391 * 256
    assert ip.eval_num_windows(8_749_870, 256, ip.NUM_EVAL_TRAIN_EXAMPLES) == 40 * 256


def test_validate_data_dir_names_the_missing_or_bad_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='format.json not found'):
        os.makedirs(tmp_path / 'empty')
        ip.validate_data_dir(str(tmp_path / 'empty'))
    data = _synthetic(tmp_path)
    ip.validate_data_dir(data)
    train = os.path.join(data, ip.DATASET_DIR, 'train.bin')
    with open(train, 'r+b') as f:
        f.truncate(os.path.getsize(train) - 2)
    with pytest.raises(DataError, match=f'{train}: 123,198 bytes, but format.json says 61,600 '):
        ip.validate_data_dir(data)
    os.remove(train)
    with pytest.raises(FileNotFoundError, match=f'{train} not found'):
        ip.validate_data_dir(data)
    meta_path = os.path.join(data, ip.DATASET_DIR, 'format.json')
    meta = json.load(open(meta_path))
    json.dump({**meta, 'version': 99}, open(meta_path, 'w'))
    with pytest.raises(DataError, match='format.json: format .* v99, expected'):
        ip.validate_data_dir(data)
