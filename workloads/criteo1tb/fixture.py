"""A small Criteo 1TB data set in the real on-disk format, for tests and benchmarks.

Real files are ``day_<d>_<NN>``: TSV lines ``label \\t I1..I13 \\t C1..C26`` with integer
features (mostly small, some negative, a few large), 8-lowercase-hex categoricals, and
empty fields for missing values. This writes a few such files, deterministic in ``seed``.
Values are drawn so every code path of the parser is hit: empty fields and upstream's NA
string ``-1`` in all columns, integers above 2^24 (float32 rounding), zero-padded hex.
"""

import os
from collections.abc import Sequence

import numpy as np

# Two train days (day_10 sorts before day_2 as well as after day_1, as in the real set),
# two test files and two validation files.
DEFAULT_FILES = (
    'day_0_00', 'day_0_01', 'day_1_00', 'day_10_00', 'day_23_00', 'day_23_18', 'day_23_19',
    'day_23_35',
)  # fmt: skip
# Rates of empty fields and of the literal NA string '-1' per value; the real data has
# ~4-45% empty per dense column and ~0-44% per categorical (Criteo 1TB docs).
MISSING_RATE = 0.1
NA_STRING_RATE = 0.02
# Distinct hex values per column: small, so hashes repeat as in the real (skewed) data.
HEX_POOL = 500


def criteo_lines(rng: np.random.Generator, num_lines: int) -> list[bytes]:
    """``num_lines`` random lines (without newline) in the Criteo TSV format."""
    cols = [rng.integers(0, 2, num_lines).astype('S')]
    for _ in range(13):
        ints = rng.geometric(0.05, num_lines) - 4  # mostly 0..60, a few negative
        big = rng.random(num_lines) < 0.02  # > 2^24: float32 keeps 24 bits
        ints[big] = rng.integers(1 << 24, 1 << 40, int(big.sum()))
        cols.append(ints.astype('S'))
    for _ in range(26):
        pool = np.array([b'%08x' % v for v in rng.integers(0, 1 << 32, HEX_POOL)])
        cols.append(pool[rng.integers(0, HEX_POOL, num_lines)])
    for col in cols:
        u = rng.random(num_lines)
        col[u < MISSING_RATE] = b''
        col[(u >= MISSING_RATE) & (u < MISSING_RATE + NA_STRING_RATE)] = b'-1'
    return [b'\t'.join(row) for row in zip(*(c.tolist() for c in cols))]


def write_criteo_fixture(
    data_dir: str,
    seed: int = 0,
    lines_per_file: int | Sequence[int] = 300,
    files: Sequence[str] = DEFAULT_FILES,
    trailing_newline: bool = True,
) -> list[str]:
    """Writes ``files`` under ``data_dir`` (created if needed) and returns their paths.

    Args:
        data_dir: Output directory.
        seed: Seeds every value; the same seed writes the same bytes.
        lines_per_file: Lines in each file, one int for all or one per file.
        files: File names (``day_<d>_<NN>``).
        trailing_newline: Whether each file's last line ends with ``'\\n'``.
    """
    os.makedirs(data_dir, exist_ok=True)
    counts = [lines_per_file] * len(files) if isinstance(lines_per_file, int) else lines_per_file
    rng = np.random.default_rng(seed)
    paths = []
    for name, count in zip(files, counts, strict=True):
        text = b'\n'.join(criteo_lines(rng, count))
        path = os.path.join(data_dir, name)
        with open(path, 'wb') as f:
            f.write(text + (b'\n' if trailing_newline and count else b''))
        paths.append(path)
    return paths
