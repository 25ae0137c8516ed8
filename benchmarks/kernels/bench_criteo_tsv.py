"""Criteo 1TB TSV parse + hash throughput: the C++ reader vs pandas + pyfarmhash.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/kernels/bench_criteo_tsv.py \
        --benchmark-json=benchmarks/results/criteo_tsv_<hw>_<yyyymmdd>.json

Smoke run (each provider once, no timing)::

    python -m pytest benchmarks/kernels/bench_criteo_tsv.py --benchmark-disable

Input: 200,000 lines from ``workloads.criteo1tb.fixture`` (seed 0, ~10% empty fields, 500
hex values per column), i.e. the real format; held in memory, so no provider pays for
disk reads except ``pipeline``, which reads the file from the page cache.

Providers (each turns the whole text into float32 inputs (n, 39) and targets (n,)):
    ext: ``find_newlines`` + ``parse_criteo_tsv``, the C++ ops (skipped when not built).
    reference: ``parse_criteo_tsv_reference`` (Python per line, numpy FarmHash); the
        fallback when the extension is missing.
    pipeline: one pass of ``get_criteo1tb_dataset('validation', ...)`` at batch 8,192
        (upstream's eval batch size): chunked reads, the parse, batching and padding.
    pandas_pyfarmhash: ``pandas.read_csv`` (C engine) then ``farmhash.fingerprint64`` per
        categorical value in Python, the way a plain-Python port of upstream would do it.
Peer (the report's "vs" column): ``pandas_pyfarmhash``. Per-item column: time per line;
``report`` adds lines/s.
"""

import io
import os

import numpy as np
import pytest
import torch
from _harness import rounds

from kernels import criteo_tsv, ext_available
from workloads.criteo1tb import fixture
from workloads.criteo1tb.input_pipeline import get_criteo1tb_dataset

NUM_LINES = 200_000
# ~40 MB of text: ~0.1-0.3 s per C++ pass on 2 cores, ~4 s for pandas + per-value hashing,
# ~15 s for the reference; rounds keep each provider under ~1 minute.
ROUNDS = {'ext': 20, 'pipeline': 10, 'pandas_pyfarmhash': 5, 'reference': 2}


@pytest.fixture(scope='module')
def criteo_file(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('criteo')
    lines = fixture.criteo_lines(np.random.default_rng(0), NUM_LINES)
    path = os.path.join(data_dir, 'day_23_19')  # the validation split's first file
    with open(path, 'wb') as f:
        f.write(b'\n'.join(lines) + b'\n')
    with open(path, 'rb') as f:
        raw = f.read()
    return str(data_dir), raw


def _ext(raw: bytes):
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    ends = criteo_tsv.find_newlines(data).numpy()
    starts = np.concatenate(([0], ends[:-1] + 1))
    return criteo_tsv.parse_criteo_tsv(data, starts, ends)


def _reference(raw: bytes):
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == ord('\n'))
    starts = np.concatenate(([0], ends[:-1] + 1))
    return criteo_tsv.parse_criteo_tsv_reference(data, starts, ends)


def _pipeline(data_dir: str):
    return [b['inputs'] for b in get_criteo1tb_dataset('validation', data_dir, None, 8192)]


def _pandas_pyfarmhash(raw: bytes):
    import farmhash
    import pandas as pd

    cats = list(range(14, 40))
    df = pd.read_csv(
        io.BytesIO(raw), sep='\t', header=None, na_values=['', '-1'], keep_default_na=False,
        dtype={**{i: np.float32 for i in range(14)}, **{i: str for i in cats}},
    )  # fmt: skip
    dense = df[list(range(1, 14))].fillna(0).to_numpy(np.float32)
    out = np.empty((len(df), criteo_tsv.NUM_INPUTS), dtype=np.float32)
    out[:, :13] = np.log(np.maximum(dense, np.float32(0)) + np.float32(1))
    for c, col in enumerate(cats):
        suffix, vocab = str(c), criteo_tsv.VOCAB_SIZES[c]
        values = df[col].fillna('00000000').tolist()
        out[:, 13 + c] = [farmhash.fingerprint64(v + suffix) % vocab for v in values]
    return out, df[0].fillna(0).to_numpy(np.float32)


PROVIDERS = {
    'ext': _ext,
    'reference': _reference,
    'pipeline': _pipeline,
    'pandas_pyfarmhash': _pandas_pyfarmhash,
}


@pytest.mark.parametrize('provider', list(PROVIDERS))
def test_criteo_tsv_parse(benchmark, criteo_file, provider):
    data_dir, raw = criteo_file
    if provider in ('ext', 'pipeline') and not ext_available():
        pytest.skip('kernels._C is not built')
    if provider == 'pandas_pyfarmhash':
        pytest.importorskip('farmhash')
    benchmark.group = 'criteo_tsv_200k_lines'
    benchmark.extra_info.update(
        device='cpu',
        items=NUM_LINES,
        item_unit='line',
        bytes=len(raw),
        torch_num_threads=torch.get_num_threads(),
        peer='pandas_pyfarmhash',
    )
    arg = data_dir if provider == 'pipeline' else raw
    benchmark.pedantic(
        PROVIDERS[provider], args=(arg,), rounds=rounds(ROUNDS[provider]), warmup_rounds=1
    )
    stats = getattr(benchmark, 'stats', None)
    if stats is not None and getattr(stats, 'stats', None) and stats.stats.data:
        median = stats.stats.median
        benchmark.extra_info['report'] = {
            'lines/s': f'{NUM_LINES / median:,.0f}',
            'MB/s': f'{len(raw) / median / 1e6:,.0f}',
        }
