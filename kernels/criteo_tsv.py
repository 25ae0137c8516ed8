"""Criteo 1TB TSV lines -> upstream AlgoPerf's features; FarmHash Fingerprint64.

Upstream (algoperf/workloads/criteo1tb/input_pipeline.py, ``_parse_example_fn``) turns a
line ``label \\t I1..I13 \\t C1..C26`` into features with TF ops:

* ``tf.io.decode_csv(line, defaults, field_delim='\\t', na_value='-1')``: every field may
  be empty; an empty field or the string ``-1`` takes the default, 0.0 for the label and
  the 13 ints (parsed as float32) and ``'00000000'`` for the 26 categoricals.
* dense: ``log(relu(x) + 1)`` in float32.
* categorical column ``c`` (0-based): ``tf.strings.to_hash_bucket_fast(value + str(c),
  VOCAB_SIZES[c])``, i.e. ``Fingerprint64(value + str(c)) % VOCAB_SIZES[c]`` with TF's
  Fingerprint64 = FarmHash ``util::Fingerprint64`` (farmhashna::Hash64), then cast to
  float32 (ids above 2^24 lose precision; the model casts them back).
* ``inputs = concat([dense, categorical], 1)``: float32 (n, 39); ``targets``: float32 (n,).
* TextLineDataset drops every ``'\\r'`` of a line (BufferedInputStream::ReadLine).

Deliberate strictness (upstream would hash or refuse differently): integers must match
``[+-]?[0-9]+`` (TF also takes floats and surrounding spaces), categoricals must be hex
(TF hashes any string; real values are 8 lowercase hex chars), and TF's CSV quoting is not
implemented (Criteo has no quotes). Anything else is a malformed line, reported as
``(line index, code, detail)`` rows of an int64 ``errors`` table with a zeroed output row.

The log is taken in double and rounded once to float32 (both here and in C++); TF uses
Eigen's float log, which may differ from that by 1 ulp on some inputs (not checkable
without TF).

Scope and fallbacks: ``parse_criteo_tsv``, ``find_newlines`` and ``farmhash_fingerprint64``
run the C++ ops of ``kernels._C`` (csrc/criteo_tsv.cpp, csrc/farmhash.h) when built, else the numpy
references here (one warning per process). The references are the tests' oracle.
"""

import math
import re
from collections.abc import Sequence

import numpy as np
import torch

from kernels import _ext

VOCAB_SIZES = (
    39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546, 403346, 10,
    2208, 11938, 155, 4, 976, 14, 39979771, 25641295, 39664984, 585935, 12972, 108, 36,
)  # fmt: skip
NUM_DENSE = 13
NUM_CATEGORICAL = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_CATEGORICAL
NUM_INPUTS = NUM_DENSE + NUM_CATEGORICAL
DEFAULT_CATEGORICAL = b'00000000'
# Error codes of the ``errors`` table; same values as csrc/criteo_tsv.cpp.
ERROR_FIELD_COUNT = 1  # detail: number of fields found
ERROR_BAD_INT = 2  # detail: field index 0..13
ERROR_BAD_HEX = 3  # detail: field index 14..39
FIELD_NAMES = ('label', *(f'I{i}' for i in range(1, 14)), *(f'C{i}' for i in range(1, 27)))

_OP_NAME = 'criteo_tsv'
_INT_RE = re.compile(rb'[+-]?[0-9]+')
_HEX_RE = re.compile(rb'[0-9a-fA-F]+')
_MASK = (1 << 64) - 1
_K0, _K1, _K2 = 0xC3A5C85C97CB3127, 0xB492B66FBE98F273, 0x9AE16A3B2F90404F


# ---- FarmHash Fingerprint64, scalar Python (any length) -------------------------------------
def _rot(v: int, s: int) -> int:
    return v if s == 0 else ((v >> s) | (v << (64 - s))) & _MASK


def _f64(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 8], 'little')


def _h16(u: int, v: int, mul: int) -> int:
    a = ((u ^ v) * mul) & _MASK
    a ^= a >> 47
    b = ((v ^ a) * mul) & _MASK
    b ^= b >> 47
    return (b * mul) & _MASK


def _weak32(b: bytes, i: int, a: int, c: int) -> tuple[int, int]:
    w, x, y, z = _f64(b, i), _f64(b, i + 8), _f64(b, i + 16), _f64(b, i + 24)
    a = (a + w) & _MASK
    c = _rot((c + a + z) & _MASK, 21)
    t = a
    a = (a + x + y) & _MASK
    c = (c + _rot(a, 44)) & _MASK
    return (a + z) & _MASK, (c + t) & _MASK


def fingerprint64(s: bytes) -> int:
    """FarmHash ``Fingerprint64`` of ``s`` (farmhashna::Hash64), as an unsigned int."""
    n, m = len(s), _MASK
    if n <= 16:
        if n >= 8:
            mul = _K2 + 2 * n
            a, b = (_f64(s, 0) + _K2) & m, _f64(s, n - 8)
            return _h16((_rot(b, 37) * mul + a) & m, ((_rot(a, 25) + b) * mul) & m, mul)
        if n >= 4:
            a = int.from_bytes(s[:4], 'little')
            return _h16(n + (a << 3), int.from_bytes(s[n - 4 :], 'little'), _K2 + 2 * n)
        if n > 0:
            y, z = s[0] + (s[n >> 1] << 8), n + (s[n - 1] << 2)
            v = ((y * _K2) ^ (z * _K0)) & m
            return ((v ^ (v >> 47)) * _K2) & m
        return _K2
    mul = _K2 + 2 * n
    if n <= 32:
        a, b = (_f64(s, 0) * _K1) & m, _f64(s, 8)
        c, d = (_f64(s, n - 8) * mul) & m, (_f64(s, n - 16) * _K2) & m
        u = (_rot((a + b) & m, 43) + _rot(c, 30) + d) & m
        return _h16(u, (a + _rot((b + _K2) & m, 18) + c) & m, mul)
    if n <= 64:
        a, b = (_f64(s, 0) * _K2) & m, _f64(s, 8)
        c, d = (_f64(s, n - 8) * mul) & m, (_f64(s, n - 16) * _K2) & m
        y = (_rot((a + b) & m, 43) + _rot(c, 30) + d) & m
        z = _h16(y, (a + _rot((b + _K2) & m, 18) + c) & m, mul)
        e, f = (_f64(s, 16) * mul) & m, _f64(s, 24)
        g, h = ((y + _f64(s, n - 32)) * mul) & m, ((z + _f64(s, n - 24)) * mul) & m
        u = (_rot((e + f) & m, 43) + _rot(g, 30) + h) & m
        return _h16(u, (e + _rot((f + a) & m, 18) + g) & m, mul)
    x, y = 81, (81 * _K1 + 113) & m
    z = ((((y * _K2 + 113) & m) ^ (((y * _K2 + 113) & m) >> 47)) * _K2) & m
    v0 = v1 = w0 = w1 = 0
    x = (x * _K2 + _f64(s, 0)) & m
    end, i = ((n - 1) // 64) * 64, 0
    last64 = end + ((n - 1) & 63) - 63
    while True:
        x = (_rot((x + y + v0 + _f64(s, i + 8)) & m, 37) * _K1) & m
        y = (_rot((y + v1 + _f64(s, i + 48)) & m, 42) * _K1) & m
        x ^= w1
        y = (y + v0 + _f64(s, i + 40)) & m
        z = (_rot((z + w0) & m, 33) * _K1) & m
        v0, v1 = _weak32(s, i, (v1 * _K1) & m, (x + w0) & m)
        w0, w1 = _weak32(s, i + 32, (z + w1) & m, (y + _f64(s, i + 16)) & m)
        z, x = x, z
        i += 64
        if i == end:
            break
    mul = (_K1 + ((z & 0xFF) << 1)) & m
    i = last64
    w0 = (w0 + ((n - 1) & 63)) & m
    v0 = (v0 + w0) & m
    w0 = (w0 + v0) & m
    x = (_rot((x + y + v0 + _f64(s, i + 8)) & m, 37) * mul) & m
    y = (_rot((y + v1 + _f64(s, i + 48)) & m, 42) * mul) & m
    x ^= (w1 * 9) & m
    y = (y + v0 * 9 + _f64(s, i + 40)) & m
    z = (_rot((z + w0) & m, 33) * mul) & m
    v0, v1 = _weak32(s, i, (v1 * mul) & m, (x + w0) & m)
    w0, w1 = _weak32(s, i + 32, (z + w1) & m, (y + _f64(s, i + 16)) & m)
    z, x = x, z
    u = (_h16(v0, w0, mul) + (y ^ (y >> 47)) * _K0 + z) & m
    return _h16(u, (_h16(v1, w1, mul) + x) & m, mul)


# ---- Vectorised numpy version for the short keys of real data (9-10 bytes) ------------------
_U = np.uint64


def _np_rot(v: np.ndarray, s: int) -> np.ndarray:
    return (v >> _U(s)) | (v << _U(64 - s))


def _np_h16(u: np.ndarray, v: np.ndarray, mul) -> np.ndarray:
    a = (u ^ v) * mul
    a ^= a >> _U(47)
    b = (v ^ a) * mul
    b ^= b >> _U(47)
    return b * mul


def _np_fetch(mat: np.ndarray, i: int, width: int) -> np.ndarray:
    return np.ascontiguousarray(mat[:, i : i + width]).view(f'<u{width}')[:, 0].astype(_U)


def _np_fingerprint64_len(mat: np.ndarray) -> np.ndarray:
    """Fingerprint64 of the rows of a (k, n) uint8 matrix, 1 <= n <= 32 (same n per row)."""
    n = mat.shape[1]
    mul = _U(_K2 + 2 * n)
    if n >= 17:
        a, b = _np_fetch(mat, 0, 8) * _U(_K1), _np_fetch(mat, 8, 8)
        c, d = _np_fetch(mat, n - 8, 8) * mul, _np_fetch(mat, n - 16, 8) * _U(_K2)
        u = _np_rot(a + b, 43) + _np_rot(c, 30) + d
        return _np_h16(u, a + _np_rot(b + _U(_K2), 18) + c, mul)
    if n >= 8:
        a, b = _np_fetch(mat, 0, 8) + _U(_K2), _np_fetch(mat, n - 8, 8)
        return _np_h16(_np_rot(b, 37) * mul + a, (_np_rot(a, 25) + b) * mul, mul)
    if n >= 4:
        a = _np_fetch(mat, 0, 4)
        return _np_h16(_U(n) + (a << _U(3)), _np_fetch(mat, n - 4, 4), mul)
    y = mat[:, 0].astype(_U) + (mat[:, n >> 1].astype(_U) << _U(8))
    z = _U(n) + (mat[:, n - 1].astype(_U) << _U(2))
    v = (y * _U(_K2)) ^ (z * _U(_K0))
    return (v ^ (v >> _U(47))) * _U(_K2)


def fingerprint64_reference(strings: Sequence[bytes]) -> np.ndarray:
    """``fingerprint64`` of every string, as uint64; numpy-vectorised per length <= 32."""
    out = np.empty(len(strings), dtype=_U)
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        if n == 0 or n > 32:
            out[idx] = [fingerprint64(strings[i]) for i in idx]
            continue
        flat = np.frombuffer(b''.join(strings[i] for i in idx), dtype=np.uint8)
        out[idx] = _np_fingerprint64_len(flat.reshape(len(idx), int(n)))
    return out


def farmhash_fingerprint64(strings: Sequence[bytes]) -> np.ndarray:
    """``fingerprint64`` of every string, as uint64: the C++ op when built, else numpy."""
    ext = _ext.load_ext()
    if ext is None:
        _ext.warn_ext_fallback(_OP_NAME)
        return fingerprint64_reference(strings)
    data = torch.frombuffer(bytearray(b''.join(strings)) or bytearray(1), dtype=torch.uint8)
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in strings], dtype=np.int64)))
    return ext.farmhash_fingerprint64(data, torch.from_numpy(offsets)).numpy().view(_U)


# ---- Lines --------------------------------------------------------------------------------
def find_newlines(data: torch.Tensor) -> torch.Tensor:
    """int64 positions of every ``b'\\n'`` in a 1-D uint8 CPU tensor, ascending."""
    ext = _ext.load_ext()
    if ext is not None:
        return ext.criteo_find_newlines(data)
    _ext.warn_ext_fallback(_OP_NAME)
    return torch.from_numpy(np.flatnonzero(data.numpy() == ord('\n')).astype(np.int64))


def _int_to_float32(s: bytes) -> np.float32 | None:
    """float32 nearest to the integer ``s`` (one RNE rounding), None if malformed/overflow."""
    if _INT_RE.fullmatch(s) is None:
        return None
    m = abs(int(s))
    if m >= 1 << 24:  # round to 24 significant bits by hand: float(m) could round twice
        shift = m.bit_length() - 24
        q, r = divmod(m, 1 << shift)
        half = 1 << (shift - 1)
        q += r > half or (r == half and q & 1)
        if q << shift >= 1 << 128:
            return None
        m = math.ldexp(q, shift)
    v = np.float32(m)
    return -v if s[:1] == b'-' else v


def describe_error(line: bytes, code: int, detail: int) -> str:
    """One-line reason for an ``errors`` row, quoting the offending field of ``line``."""
    if code == ERROR_FIELD_COUNT:
        return f'expected {NUM_FIELDS} tab-separated fields, found {detail}'
    field = line.replace(b'\r', b'').split(b'\t')[detail]
    kind = 'an integer' if code == ERROR_BAD_INT else 'a hex string'
    return f'field {detail + 1} ({FIELD_NAMES[detail]}) is not {kind}: {field[:40]!r}'


def _as_long(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.int64)).contiguous()


def parse_criteo_tsv_reference(
    data: torch.Tensor, starts, ends, vocab_sizes: Sequence[int] = VOCAB_SIZES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The spec of ``parse_criteo_tsv``: Python per line, numpy hashing.

    Args:
        data: 1-D uint8 CPU tensor holding the text.
        starts, ends: int64 sequences; line ``i`` is ``data[starts[i]:ends[i]]`` without
            its ``'\\n'``.
        vocab_sizes: 26 bucket counts; upstream's by default.

    Returns:
        ``(inputs, targets, errors)``: float32 (n, 39), float32 (n,), and int64 (m, 3) rows
        ``(line index, code, detail)`` of the malformed lines, ascending, whose output rows
        are zero.
    """
    raw = data.numpy().tobytes()
    starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    n = len(starts)
    inputs = np.zeros((n, NUM_INPUTS), dtype=np.float32)
    targets = np.zeros(n, dtype=np.float32)
    errors, key_rows, keys = [], [], []
    one = np.float32(1)
    for i in range(n):
        fields = raw[starts[i] : ends[i]].replace(b'\r', b'').split(b'\t')
        if len(fields) != NUM_FIELDS:
            errors.append((i, ERROR_FIELD_COUNT, len(fields)))
            continue
        nums = [np.float32(0) if f in (b'', b'-1') else _int_to_float32(f) for f in fields[:14]]
        bad = [f for f, v in enumerate(nums) if v is None]
        if bad:
            errors.append((i, ERROR_BAD_INT, bad[0]))
            continue
        cats = [DEFAULT_CATEGORICAL if f in (b'', b'-1') else f for f in fields[14:]]
        bad = [c for c, f in enumerate(cats) if _HEX_RE.fullmatch(f) is None]
        if bad:
            errors.append((i, ERROR_BAD_HEX, 14 + bad[0]))
            continue
        targets[i] = nums[0]
        # float32 relu(x) + 1, then a correctly rounded log: the C++ op does the same.
        inputs[i, :NUM_DENSE] = [math.log(float(max(x, np.float32(0)) + one)) for x in nums[1:]]
        key_rows.append(i)
        keys.extend(f + str(c).encode() for c, f in enumerate(cats))
    if keys:
        vocab = np.tile(np.asarray(vocab_sizes, dtype=_U), len(key_rows))
        ids = (fingerprint64_reference(keys) % vocab).astype(np.float32)
        inputs[key_rows, NUM_DENSE:] = ids.reshape(len(key_rows), NUM_CATEGORICAL)
    err = torch.tensor(errors, dtype=torch.int64).reshape(-1, 3)
    return torch.from_numpy(inputs), torch.from_numpy(targets), err


def parse_criteo_tsv(
    data: torch.Tensor, starts, ends, vocab_sizes: Sequence[int] = VOCAB_SIZES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Parses Criteo TSV lines as upstream AlgoPerf does; same contract as the reference.

    The C++ op (multi-threaded over lines) when ``kernels._C`` is built, else the reference.
    """
    if len(vocab_sizes) != NUM_CATEGORICAL:
        raise ValueError(f'vocab_sizes must have {NUM_CATEGORICAL} entries, got {len(vocab_sizes)}')
    ext = _ext.load_ext()
    if ext is None:
        _ext.warn_ext_fallback(_OP_NAME)
        return parse_criteo_tsv_reference(data, starts, ends, vocab_sizes)
    return ext.criteo_tsv_parse(data, _as_long(starts), _as_long(ends), _as_long(vocab_sizes))
