"""fastMRI train input pipeline throughput (slices/s): our h5 reader vs a plain port of upstream's.

Run (from the repository root, on a quiet machine)::

    python -m pytest benchmarks/workloads/bench_fastmri_pipeline.py \
        --benchmark-json=benchmarks/results/fastmri_pipeline_<hw>_<yyyymmdd>.json

Smoke run (2 timed rounds)::

    ALGOPERF_BENCH_QUICK=1 python -m pytest benchmarks/workloads/bench_fastmri_pipeline.py

Input: ``workloads.fastmri.fixture`` volumes at the real sizes, written once per session
into a tmp dir (not timed): 3 train files of 36, 32 and 30 slices, complex64 k-space
640 x {368, 372, 356} and float32 ``reconstruction_esc`` 320 x 320 (~225 MB, served from
the page cache after the warm-up round, for both providers alike).

One round = ``NUM_BATCHES`` train batches of ``BATCH`` slices, each a dict of float32
``inputs``/``targets`` [16, 320, 320] and ``mean``/``std``/``volume_max`` [16] tensors. Both
providers walk the same buffer-shuffled example order with the same masks, so they yield
the same batches (``test_providers_yield_the_same_batches``, to float rounding of the two
FFTs).

Providers:
    pipeline: ``workloads.fastmri.input_pipeline`` (LRU of open h5 files, torch.fft per
        slice, ``torch.stack`` per batch), as the workload feeds training.
    reference (peer): what a plain port of upstream's tf.data per-example path does
        without TF: per slice open the h5 file, read the slice, numpy
        ``ifftshift``/``ifft2``/``fftshift``, crop, normalise, clip; ``np.stack`` per batch.
``report`` adds slices/s and, on the pipeline's row, the ratio to the reference's.

Load-sensitive: the pipeline's per-slice torch ops (fft, the rolls of fftshift) are small
and run on torch's intra-op pool, which degrades badly when the cores are shared (on a
busy 2-core machine a slice took ~190 ms with 2 threads vs ~10 ms with 1), while numpy's
path is single-threaded. ``torch_num_threads`` is recorded; time on a quiet machine.
"""

import itertools

import h5py
import numpy as np
import pytest
import torch
from _harness import rounds

from workloads.fastmri import input_pipeline as ip
from workloads.fastmri.fixture import write_fastmri_fixture

BATCH = 16  # A typical per-device training batch; NUM_BATCHES of them ~ one fixture epoch.
NUM_BATCHES = 6  # 96 of the fixture's 98 slices per round.
SLICES = (36, 32, 30)  # Knee volumes hold ~30-40 slices.
ROUNDS = 5
DATA_RNG = (7, 11)
_MEDIANS: dict[str, float] = {}


@pytest.fixture(scope='session')
def fastmri_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp('fastmri')
    # One tiny val file: the reader requires both directories to exist.
    write_fastmri_fixture(str(data_dir), seed=0, num_train=3, num_val=1, slices=[*SLICES, 2])
    return str(data_dir)


def _reference_batches(data_dir: str, batch_size: int):
    """Endless train batches the straightforward way (see the module docstring)."""
    files = ip.split_files('train', data_dir)
    examples = []
    for f, path in enumerate(files):
        with h5py.File(path, 'r') as hf:
            examples += [(f, s) for s in range(hf['kspace'].shape[0])]
    seed = DATA_RNG[0]
    order = itertools.chain.from_iterable(
        ip.buffer_shuffle(len(examples), 16 * batch_size, np.random.default_rng([seed, epoch]))
        for epoch in itertools.count()
    )
    while True:
        slices = [_reference_slice(files, examples, int(next(order))) for _ in range(batch_size)]
        yield {k: torch.from_numpy(np.stack([s[k] for s in slices])) for k in slices[0]}


def _reference_slice(files, examples, index: int) -> dict[str, np.ndarray]:
    f, s = examples[index]
    # Opened per slice, as a per-example port does (upstream's generator reads a volume
    # per open); it is served from the page cache after the warm-up round.
    with h5py.File(files[f], 'r') as hf:
        kspace = hf['kspace'][s]
        target = hf['reconstruction_esc'][s]
        volume_max = np.float32(hf.attrs.get('max', 0.0))
    h, w = kspace.shape
    uniform = ip.mask_rng('train', DATA_RNG, index).random(w, dtype=np.float32)
    masked = kspace * ip.sample_mask(w, uniform)
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(masked), norm='ortho'))
    top, left = (h - target.shape[0]) // 2, (w - target.shape[1]) // 2
    crop = np.abs(image[top : top + target.shape[0], left : left + target.shape[1]])
    mean, std = crop.mean(dtype=np.float32), crop.std(dtype=np.float32)
    return {
        'inputs': np.clip((crop - mean) / std, -ip.CLIP, ip.CLIP).astype(np.float32),
        'targets': np.clip((target - mean) / std, -ip.CLIP, ip.CLIP).astype(np.float32),
        'mean': mean,
        'std': std,
        'volume_max': volume_max,
    }


def _make(provider: str, data_dir: str):
    if provider == 'pipeline':
        return ip.get_fastmri_dataset('train', data_dir, np.asarray(DATA_RNG), BATCH)
    return _reference_batches(data_dir, BATCH)


def test_providers_yield_the_same_batches(fastmri_dir):
    # Fairness: both do the same work. The FFTs differ (pocketfft in numpy vs torch), so
    # normalised pixels agree to ~1e-6 relative of values in [-6, 6]; 1e-4 leaves headroom.
    ours, ref = _make('pipeline', fastmri_dir), _make('reference', fastmri_dir)
    for _ in range(2):
        a, b = next(ours), next(ref)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype == torch.float32
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)
    ours.close()


@pytest.mark.parametrize('provider', ['reference', 'pipeline'])
def test_fastmri_pipeline(benchmark, fastmri_dir, provider):
    batches = _make(provider, fastmri_dir)

    def one_round():
        for _ in range(NUM_BATCHES):
            next(batches)

    items = BATCH * NUM_BATCHES
    benchmark.group = f'fastmri_pipeline_b{BATCH}'
    benchmark.extra_info.update(
        device='cpu',
        items=items,
        item_unit='slice',
        torch_num_threads=torch.get_num_threads(),
        peer='reference',
    )
    benchmark.pedantic(one_round, rounds=rounds(ROUNDS), warmup_rounds=1, iterations=1)
    if provider == 'pipeline':
        batches.close()
    stats = getattr(benchmark, 'stats', None)
    if stats is None or not getattr(stats, 'stats', None) or not stats.stats.data:
        return
    _MEDIANS[provider] = stats.stats.median
    report = {'slices/s': f'{items / stats.stats.median:,.1f}'}
    if provider != 'reference' and 'reference' in _MEDIANS:
        report['x reference'] = f'{_MEDIANS["reference"] / stats.stats.median:.2f}'
    benchmark.extra_info['report'] = report
