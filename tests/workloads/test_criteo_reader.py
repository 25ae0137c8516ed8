"""Criteo 1TB reader: FarmHash vs pyfarmhash, C++ parse vs the reference, pipeline semantics.

Upstream facts checked here (algoperf/workloads/criteo1tb/input_pipeline.py): the hashed
string is ``value + str(col)`` with ``col`` the 0-based categorical column, missing or
``-1`` values hash as ``'00000000' + str(col)``, buckets are ``Fingerprint64 % VOCAB_SIZES[col]``
cast to float32; dense values are ``log(relu(x) + 1)`` with missing/``-1`` -> 0.
"""

import math
import os

import numpy as np
import pytest
import torch

from kernels import _ext, criteo_tsv
from workloads.criteo1tb import fixture
from workloads.criteo1tb.input_pipeline import CriteoFormatError, get_criteo1tb_dataset, split_files

farmhash = pytest.importorskip('farmhash')  # pyfarmhash, the dev extra

PARSERS = {
    'reference': criteo_tsv.parse_criteo_tsv_reference,
    'ext': pytest.param(criteo_tsv.parse_criteo_tsv, marks=pytest.mark.ext),
}


@pytest.fixture(autouse=True)
def _skip_ext_tests_without_extension(request):
    # At run time, not collection, so collecting this file never imports kernels._C (as
    # tests/kernels/conftest.py does for its directory).
    if request.node.get_closest_marker('ext') is not None and not _ext.ext_available():
        pytest.skip('kernels._C is not built: pip install --no-build-isolation -e .')


RNG = np.array([7, 11], dtype=np.uint32)


def _random_strings(per_length: int = 25, max_len: int = 100) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for n in range(max_len + 1):
        out += [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for _ in range(per_length)]
        out.append(rng.choice(list(b'0123456789abcdef'), n).astype(np.uint8).tobytes())
    return out


def test_fingerprint64_python_matches_pyfarmhash():
    strings = _random_strings()
    expected = np.array([farmhash.fingerprint64(s) for s in strings], dtype=np.uint64)
    assert [criteo_tsv.fingerprint64(s) for s in strings] == expected.tolist()
    np.testing.assert_array_equal(criteo_tsv.fingerprint64_reference(strings), expected)


@pytest.mark.ext
def test_fingerprint64_cpp_matches_pyfarmhash():
    strings = _random_strings() + [bytes(range(256)) * 5, b'x' * 4097]
    expected = np.array([farmhash.fingerprint64(s) for s in strings], dtype=np.uint64)
    np.testing.assert_array_equal(criteo_tsv.farmhash_fingerprint64(strings), expected)


def _parse(parser, lines: list[bytes]):
    text = b'\n'.join(lines)
    ends = np.cumsum([len(x) + 1 for x in lines]) - 1
    data = torch.frombuffer(bytearray(text + b'\n'), dtype=torch.uint8)
    return parser(data, ends - np.array([len(x) for x in lines]), ends)


def _bucket(value: bytes, col: int) -> np.float32:
    return np.float32(
        farmhash.fingerprint64(value + str(col).encode()) % criteo_tsv.VOCAB_SIZES[col]
    )


@pytest.mark.parametrize('parser', PARSERS.values(), ids=PARSERS.keys())
def test_upstream_semantics_by_hand(parser):
    # 2^60 + 2^36 + 1 is just above a float32 midpoint: via double it would round to 2^60.
    dense = [b'', b'-1', b'-5', b'0', b'5', b'16777217', b'+3', b'-0', b'1152921573326323713',
             b'7', b'', b'1', b'2']  # fmt: skip
    cats = [b'%08x' % (0x68FD1E64 + c) for c in range(26)]
    cats[3], cats[7], cats[25] = b'', b'-1', b'ABCDEF'
    inputs, targets, errors = _parse(
        parser, [b'\t'.join([b'1', *dense, *cats]), b'-1\r' + b'\t' * 39]
    )
    assert errors.shape == (0, 3)
    assert targets.tolist() == [1.0, 0.0]
    xs = [np.float32(x) for x in (0, 0, 0, 0, 5, 1 << 24, 3, 0, 2**60 + 2**37, 7, 0, 1, 2)]
    want = [np.float32(math.log(float(x + np.float32(1)))) for x in xs]
    assert inputs[0, :13].tolist() == want  # relu(x) + 1 in float32, then log
    expected = [_bucket(b'00000000' if c in (3, 7) else v, c) for c, v in enumerate(cats)]
    assert inputs[0, 13:].tolist() == expected
    assert inputs[1].tolist() == [0.0] * 13 + [_bucket(b'00000000', c) for c in range(26)]
    # Ids above 2^24 are rounded to float32 as upstream's tf.cast does.
    ids = [farmhash.fingerprint64(v + str(c).encode()) % criteo_tsv.VOCAB_SIZES[c]
           for c, v in enumerate(cats)]  # fmt: skip
    assert any(int(inputs[0, 13 + c]) != ids[c] for c in range(26) if c not in (3, 7))


E = criteo_tsv


def _line(values: dict[int, bytes]) -> bytes:
    fields = [b''] * E.NUM_FIELDS
    for i, v in values.items():
        fields[i] = v
    return b'\t'.join(fields)


MALFORMED = {
    'too_few_fields': (b'\t'.join([b'1'] * 39), E.ERROR_FIELD_COUNT, 39),
    'too_many_fields': (b'\t'.join([b'1'] * 41), E.ERROR_FIELD_COUNT, 41),
    'empty_line': (b'', E.ERROR_FIELD_COUNT, 1),
    'float_label': (_line({0: b'0.5'}), E.ERROR_BAD_INT, 0),
    'text_int': (_line({1: b'12a'}), E.ERROR_BAD_INT, 1),
    'space_int': (_line({13: b' 4'}), E.ERROR_BAD_INT, 13),
    'sign_only': (_line({1: b'-'}), E.ERROR_BAD_INT, 1),
    'bad_hex': (_line({14: b'68fd1g64'}), E.ERROR_BAD_HEX, 14),
    'last_hex': (_line({39: b'-2'}), E.ERROR_BAD_HEX, 39),
}


@pytest.mark.parametrize('parser', PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize('case', MALFORMED)
def test_malformed_lines_are_reported_and_zeroed(parser, case):
    line, code, detail = MALFORMED[case]
    good = b'\t'.join([b'1'] + [b'3'] * 13 + [b'abc'] * 26)
    inputs, targets, errors = _parse(parser, [good, line, good])
    assert errors.tolist() == [[1, code, detail]]
    assert not inputs[1].any() and targets[1] == 0
    assert torch.equal(inputs[0], inputs[2]) and inputs[0].any()
    assert criteo_tsv.describe_error(line, code, detail)


@pytest.mark.ext
def test_ext_parse_equals_reference_on_fixture(tmp_path):
    paths = fixture.write_criteo_fixture(str(tmp_path), seed=3, lines_per_file=400)
    for path in paths[:3]:
        with open(path, 'rb') as f:
            raw = bytearray(f.read().replace(b'\n', b'\r\n', 7))  # some CRLF lines too
        data = torch.frombuffer(raw, dtype=torch.uint8)
        ends = criteo_tsv.find_newlines(data).numpy()
        np.testing.assert_array_equal(ends, np.flatnonzero(np.frombuffer(raw, np.uint8) == 10))
        starts = np.concatenate(([0], ends[:-1] + 1))
        got = criteo_tsv.parse_criteo_tsv(data, starts, ends)
        want = criteo_tsv.parse_criteo_tsv_reference(data, starts, ends)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and torch.equal(g.view(-1), w.view(-1))  # bitwise for f32
            if g.dtype == torch.float32:
                assert torch.equal(g.view(torch.int32), w.view(torch.int32))


@pytest.mark.ext
def test_ext_parse_equals_reference_on_mutated_lines():
    """Every key length 1..22 (the C++ hashes 8..16-byte keys without building them) and
    random edits with tabs, signs, spaces, CR, NUL and 0xff bytes: same rows, same errors."""
    rng = np.random.default_rng(5)
    lines = fixture.criteo_lines(rng, 3000)
    for i in range(0, 3000, 3):  # hex values of every length
        fields = lines[i].split(b'\t')
        for c in range(14, 40):
            if fields[c] not in (b'', b'-1'):
                fields[c] = b'%x' % int(rng.integers(0, 1 << 62)) * 2
                fields[c] = fields[c][: int(rng.integers(1, 21))]
        lines[i] = b'\t'.join(fields)
    alphabet = list(b'0123456789abcdefABCDEFgxz-+ .\t\r\x00\xff')
    for i in rng.choice(3000, 300, replace=False):
        line = bytearray(lines[i])
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, len(line) + 1))
            line[pos:pos] = bytes([int(rng.choice(alphabet))])
        lines[i] = bytes(line)
    got = _parse(criteo_tsv.parse_criteo_tsv, lines)
    want = _parse(criteo_tsv.parse_criteo_tsv_reference, lines)
    assert len(want[2]) > 100 and torch.equal(got[2], want[2])
    for g, w in zip(got[:2], want[:2], strict=True):
        assert torch.equal(g.view(torch.int32), w.view(torch.int32))


# ---- pipeline ---------------------------------------------------------------------------
@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / 'criteo'
    counts = [300, 250, 200, 170, 300, 150, 300, 133]
    fixture.write_criteo_fixture(str(d), seed=1, lines_per_file=counts)
    (d / 'day_23_36').write_text('not part of any split\n')
    (d / 'day_23_5').write_text('not part of any split\n')
    return str(d)


def _file_rows(path: str):
    with open(path, 'rb') as f:
        raw = f.read()
    lines = [x for x in raw.split(b'\n') if x.replace(b'\r', b'')] if raw else []
    return _parse(criteo_tsv.parse_criteo_tsv_reference, lines)[:2]


def _stream(paths):
    parts = [_file_rows(p) for p in paths]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _take(ds, n):
    return [next(ds) for _ in range(n)]


def test_split_files_follow_upstream(data_dir):
    names = {s: [os.path.basename(p) for p in split_files(s, data_dir)] for s in
             ('train', 'eval_train', 'validation', 'test')}  # fmt: skip
    assert (
        names['train'] == names['eval_train'] == ['day_0_00', 'day_0_01', 'day_10_00', 'day_1_00']
    )
    assert names['test'] == ['day_23_00', 'day_23_18']
    assert names['validation'] == ['day_23_19', 'day_23_35']


def test_missing_data_errors_name_directory_and_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'nowhere.*day_<d>_<NN>'):
        get_criteo1tb_dataset('train', str(tmp_path / 'nowhere'), RNG, 8)
    fixture.write_criteo_fixture(str(tmp_path), files=['day_0_00'], lines_per_file=5)
    with pytest.raises(FileNotFoundError, match=r'no validation files.*day_23_19 .. day_23_35'):
        get_criteo1tb_dataset('validation', str(tmp_path), RNG, 8)
    with pytest.raises(ValueError, match='multiple of world_size'):
        get_criteo1tb_dataset('train', str(tmp_path), RNG, 10, world_size=4)


@pytest.mark.parametrize('split', ['validation', 'test'])
def test_eval_split_one_pass_padded_with_weights(data_dir, split):
    inputs, targets = _stream(split_files(split, data_dir))
    batches = list(get_criteo1tb_dataset(split, data_dir, RNG, 128, chunk_bytes=4096))
    assert len(batches) == math.ceil(len(targets) / 128)
    weights = torch.cat([b['weights'] for b in batches])
    assert weights.sum() == len(targets) and not weights[len(targets) :].any()
    assert torch.equal(torch.cat([b['inputs'] for b in batches])[: len(targets)], inputs)
    assert torch.equal(torch.cat([b['targets'] for b in batches])[: len(targets)], targets)
    assert all(b['inputs'].shape == (128, 39) for b in batches)
    assert not batches[-1]['inputs'][weights[-128:] == 0].any()


def test_train_drops_remainder_repeats_and_reshuffles_files(data_dir):
    ds = get_criteo1tb_dataset('train', data_dir, RNG, 96)
    order0, order1 = ds.file_order(0), ds.file_order(1)
    assert order0 != order1 and sorted(order0) == split_files('train', data_dir)
    want = []
    for order in (order0, order1):
        inputs, targets = _stream(order)
        n = len(targets) // 96 * 96  # upstream: batch(drop_remainder=True), then repeat()
        want += list(zip(inputs[:n].split(96), targets[:n].split(96), strict=True))
    for got, (inputs, targets) in zip(_take(ds, len(want)), want, strict=True):
        assert torch.equal(got['inputs'], inputs) and torch.equal(got['targets'], targets)
        assert got['weights'].tolist() == [1.0] * 96


def test_rank_shards_partition_the_global_batch(data_dir):
    for split, n in (('train', 20), ('validation', 4), ('eval_train', 8)):
        whole = _take(get_criteo1tb_dataset(split, data_dir, RNG, 128, n), n)
        shards = [
            _take(get_criteo1tb_dataset(split, data_dir, RNG, 128, n, rank=r, world_size=4), n)
            for r in range(4)
        ]
        for i, batch in enumerate(whole):
            for key in ('inputs', 'targets', 'weights'):
                assert all(s[i][key].shape[0] == 32 for s in shards)
                assert torch.equal(torch.cat([s[i][key] for s in shards]), batch[key]), (
                    split,
                    i,
                    key,
                )


def test_determinism_and_seed(data_dir):
    a = _take(get_criteo1tb_dataset('train', data_dir, RNG, 64), 30)
    b = _take(get_criteo1tb_dataset('train', data_dir, [7, 99], 64), 30)
    c = _take(get_criteo1tb_dataset('train', data_dir, [8, 11], 64), 30)
    assert all(torch.equal(x['inputs'], y['inputs']) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x['inputs'], y['inputs']) for x, y in zip(a, c, strict=True))


def test_num_batches_and_repeat_final_dataset(data_dir):
    ds = get_criteo1tb_dataset(
        'validation', data_dir, RNG, 100, num_batches=2, repeat_final_dataset=True
    )
    got = _take(ds, 6)
    for i in range(2, 6):
        assert torch.equal(got[i]['inputs'], got[i % 2]['inputs'])
    assert len(list(get_criteo1tb_dataset('test', data_dir, RNG, 100, num_batches=2))) == 2


def test_chunking_truncated_last_line_and_crlf(tmp_path, data_dir):
    base = list(get_criteo1tb_dataset('validation', data_dir, RNG, 64))
    other = tmp_path / 'other'
    other.mkdir()
    for name in ('day_23_19', 'day_23_35'):
        with open(os.path.join(data_dir, name), 'rb') as f:
            raw = f.read().rstrip(b'\n')  # no newline after the last line
        (other / name).write_bytes(raw.replace(b'\n', b'\r\n') if name.endswith('19') else raw)
    for chunk in (64, 1000, 1 << 20):  # 64 B: smaller than a line, so the buffer grows
        got = list(get_criteo1tb_dataset('validation', str(other), RNG, 64, chunk_bytes=chunk))
        assert len(got) == len(base)
        assert all(torch.equal(g['inputs'], b['inputs']) for g, b in zip(got, base, strict=True))


def test_malformed_line_names_file_and_line_or_is_skipped(tmp_path):
    path = fixture.write_criteo_fixture(str(tmp_path), files=['day_23_00'], lines_per_file=40)[0]
    with open(path, 'rb') as f:
        lines = f.read().split(b'\n')
    lines[16] = lines[16].replace(b'\t', b'\tzz', 1)  # line 17: the label's neighbour I1
    with open(path, 'wb') as f:
        f.write(b'\n'.join(lines))
    with pytest.raises(CriteoFormatError, match=rf'{path}:17: field 2 \(I1\) is not an integer'):
        list(get_criteo1tb_dataset('test', str(tmp_path), RNG, 16, rank=0, world_size=2))
    ds = get_criteo1tb_dataset('test', str(tmp_path), RNG, 16, skip_malformed=True)
    batches = list(ds)
    assert ds.skipped_lines == 1
    weights = torch.cat([b['weights'] for b in batches])
    assert weights[:40].tolist() == [1.0] * 16 + [0.0] + [1.0] * 23 and not weights[40:].any()
    assert not batches[1]['inputs'][0].any()


def test_fallback_without_extension_gives_the_same_batches(data_dir, monkeypatch):
    want = _take(get_criteo1tb_dataset('train', data_dir, RNG, 64, world_size=2, rank=1), 12)
    monkeypatch.setattr(_ext, 'load_ext', lambda: None)
    monkeypatch.setattr(_ext, '_warned', True)
    got = _take(get_criteo1tb_dataset('train', data_dir, RNG, 64, world_size=2, rank=1), 12)
    for g, w in zip(got, want, strict=True):
        assert all(torch.equal(g[k], w[k]) for k in ('inputs', 'targets', 'weights'))
