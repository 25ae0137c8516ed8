"""FineWeb-Edu LM reader throughput (windows/s): our batched gather vs a per-window numpy loop.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/workloads/bench_finewebedu_lm_reader.py \
        --benchmark-json=benchmarks/results/finewebedu_lm_reader_<hw>_<yyyymmdd>.json

Smoke run (2 timed rounds, a 2,000-window stream)::

    ALGOPERF_BENCH_QUICK=1 python -m pytest benchmarks/workloads/bench_finewebedu_lm_reader.py

Input: a random uint16 token stream of ``NUM_WINDOWS`` 1025-token windows (~205 MB at
100,000) in the reader's format (what `algoperf data finewebedu_lm` writes), written once
per session into a tmp dir (not timed) and memory-mapped; served from the page cache after
the warm-up round, for both providers alike.

One round = ``BATCHES`` batches of ``BATCH`` windows (upstream's baseline batch 64), as CPU
tensors: inputs int32 [64, 1024], targets int64 [64, 1024]. Both providers read the same
windows (train: epoch 0's permutation from ``default_rng([seed, 0])``; eval: the split's
first windows in order) and yield equal batches (checked before timing).

Providers:
    batched: ``input_pipeline.TrainBatches.batch`` / ``EvalBatches`` (one fancy-index
        gather of the batch's windows from a [num_windows, 1025] view of the memmap, or one
        contiguous slice for eval), without the prefetch thread, so the row is the work
        itself (in training the Prefetcher runs it beside the step).
    per_window (peer): what a straightforward reader does: a Python loop slicing each
        window ``tokens[1025 i : 1025 (i + 1)]`` from the memmap, ``np.stack``, then the
        same int32/int64 conversions.
``report`` adds windows/s.
"""

import json
import os

import numpy as np
import pytest
import torch
from _harness import quick, rounds

from workloads.finewebedu_lm import input_pipeline as ip

NUM_WINDOWS = 2_000 if quick() else 100_000
BATCH, BATCHES, SEED = 64, 16, 0
ROUNDS = {'batched': 30, 'per_window': 10}


def write_stream(root: str, num_windows: int, seed: int = 0) -> str:
    """A train and a validation split of random GPT-2 ids in the reader's format; data_dir."""
    out = os.path.join(root, ip.DATASET_DIR)
    os.makedirs(out)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, name in ip.SPLIT_FILES.items():
        tokens = rng.integers(0, ip.VOCAB_SIZE, num_windows * ip.WINDOW + 17, dtype=np.uint16)
        tokens.astype('<u2').tofile(os.path.join(out, name))
        splits[split] = {'file': name, 'tokens': len(tokens)}
    meta = {
        'format': ip.FORMAT_NAME,
        'version': ip.FORMAT_VERSION,
        'vocab_size': ip.VOCAB_SIZE,
        'eos_id': ip.EOS_ID,
        'splits': splits,
    }
    with open(os.path.join(out, 'format.json'), 'w') as f:
        json.dump(meta, f)
    return root


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return write_stream(str(tmp_path_factory.mktemp('finewebedu')), NUM_WINDOWS)


def _batched_train(data_dir):
    it = ip.TrainBatches(ip.load_stream(data_dir, 'train'), SEED, BATCH, prefetch=False)
    return [it.batch(step) for step in range(BATCHES)]


def _batched_eval(data_dir):
    stream = ip.load_stream(data_dir, 'validation')
    return list(ip.EvalBatches(stream, BATCH * BATCHES, BATCH))


def _per_window(tokens: np.ndarray, ids: list[int]) -> list[dict]:
    out = []
    for b in range(0, len(ids), BATCH):
        rows = [tokens[i * ip.WINDOW : (i + 1) * ip.WINDOW] for i in ids[b : b + BATCH]]
        windows = np.stack(rows)
        out.append(
            {
                'inputs': torch.from_numpy(windows[:, :-1].astype(np.int32)),
                'targets': torch.from_numpy(windows[:, 1:].astype(np.int64)),
            }
        )
    return out


def _per_window_train(data_dir):
    stream = ip.load_stream(data_dir, 'train')
    order = np.random.default_rng([SEED, 0]).permutation(stream.num_windows)
    return _per_window(stream.tokens, order[: BATCH * BATCHES].tolist())


def _per_window_eval(data_dir):
    stream = ip.load_stream(data_dir, 'validation')
    return _per_window(stream.tokens, list(range(BATCH * BATCHES)))


PROVIDERS = {
    'train': {'batched': _batched_train, 'per_window': _per_window_train},
    'eval': {'batched': _batched_eval, 'per_window': _per_window_eval},
}


@pytest.mark.parametrize('mode', list(PROVIDERS))
def test_providers_yield_the_same_batches(data_dir, mode):
    ours, peer = (PROVIDERS[mode][p](data_dir) for p in ('batched', 'per_window'))
    assert len(ours) == len(peer) == BATCHES
    for a, b in zip(ours, peer):
        for key in ('inputs', 'targets'):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key])


@pytest.mark.parametrize('provider', ['batched', 'per_window'])
@pytest.mark.parametrize('mode', list(PROVIDERS))
def test_finewebedu_lm_reader(benchmark, data_dir, mode, provider):
    windows = BATCH * BATCHES
    benchmark.group = f'finewebedu_lm_reader_{mode}_b{BATCH}'
    benchmark.extra_info.update(
        device='cpu', items=windows, item_unit='window', peer='per_window',
        num_windows=NUM_WINDOWS, torch_num_threads=torch.get_num_threads(),
    )  # fmt: skip
    benchmark.pedantic(
        PROVIDERS[mode][provider], args=(data_dir,), rounds=rounds(ROUNDS[provider]),
        warmup_rounds=1,
    )  # fmt: skip
    stats = getattr(benchmark, 'stats', None)
    if stats is not None and getattr(stats, 'stats', None) and stats.stats.data:
        benchmark.extra_info['report'] = {'windows/s': f'{windows / stats.stats.median:,.0f}'}
