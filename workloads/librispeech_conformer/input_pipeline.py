"""LibriSpeech reader: upstream's preprocessed `.npy` layout, read per rank.

Upstream (algoperf/workloads/librispeech_conformer/input_pipeline.py and
librispeech_pytorch/workload.py `_build_input_queue`, spec §6.5) reads one `np.load`
pair per example in a `torch.utils.data.DataLoader` (4 workers, DistributedSampler
under DDP). The on-disk layout is upstream's, as `dataset/librispeech_preprocess.py`
writes it (and `algoperf data librispeech` here, see `convert.py`)::

    <data_dir>/spm_model.vocab                  SentencePiece model (binary, despite the name)
    <data_dir>/<subset>.csv                     pandas index + column `id`
    <data_dir>/<subset>/<id>_audio.npy          int64 16-bit PCM samples, <= 320,000
    <data_dir>/<subset>/<id>_targets.npy        int32 token ids (EOS-terminated), < 1024

Kept from upstream:
    * Splits: train and eval_train = train-clean-100 + train-clean-360 + train-other-500
      (examples in CSV order, subsets concatenated), validation = dev-clean + dev-other,
      test = test-clean. eval_train = the first `num_eval_train_examples` of
      `random.Random(data_rng[0]).shuffle(range(len(train)))` (upstream's Subset exactly).
    * Examples: audio zero-padded to 320,000 float32 samples with `input_paddings` 1.0 on
      padding; targets zero-padded to 256 as float32 with `target_paddings` 1.0 on padding.
      Batch: ``{'inputs': (audio [n, 320000], input_paddings), 'targets': (targets
      [n, 256], target_paddings)}``, n = global_batch_size // world_size.
    * Train: reshuffled every epoch, the last partial global batch of an epoch dropped
      (``drop_last``), epochs repeated forever.
    * Over-long examples (audio > 320,000 samples, transcript > 256 characters) were
      dropped by the preprocessing; the reader rejects one that is still too long,
      naming the file (upstream's `np.pad` would fail on it).
Deliberate differences:
    * Shuffle: ``np.random.default_rng([data_rng[0], epoch])`` permutations, the same on
      every rank, each rank taking its slice ``[rank * n, (rank + 1) * n)`` of every
      global batch (upstream: torch's global RNG without DDP, DistributedSampler's fixed
      seed 0 with it, so the order ignored `--rng_seed` under DDP).
    * Eval batches: every pass is cut into ceil(N / global_batch_size) global batches,
      the last one padded to full size with copies of the pass's first example that
      carry ``'weights'`` 0 (eval batches only; the eval masks them out of the loss and
      WER). Upstream's DistributedEvalSampler gave ranks unequal, partial batches.
    * Loading: a background thread per queue, examples of a batch read by a small
      thread pool (np.load releases the GIL), instead of DataLoader worker processes.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import queue
import random
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from algoperf.data_io import check_dtype
from algoperf.errors import DataError

MAX_INPUT_LENGTH = 320_000  # Samples: 20 s at 16 kHz.
MAX_TARGET_LENGTH = 256  # Token ids.
MAX_TRANSCRIPT_CHARS = 256  # Upstream's preprocessing limit (characters, not tokens).
VOCAB_SIZE = 1024  # The models' outputs: target ids must be below it.
TOKENIZER_FILE = 'spm_model.vocab'
TRAIN_SUBSETS = ('train-clean-100', 'train-clean-360', 'train-other-500')
SUBSETS = TRAIN_SUBSETS + ('dev-clean', 'dev-other', 'test-clean')
SPLITS = {
    'train': TRAIN_SUBSETS,
    'eval_train': TRAIN_SUBSETS,
    'validation': ('dev-clean', 'dev-other'),
    'test': ('test-clean',),
}
LAYOUT = (
    f'<data_dir>/{TOKENIZER_FILE}, <data_dir>/<subset>.csv and <data_dir>/<subset>/<id>_{{audio,'
    f'targets}}.npy for subsets {", ".join(SUBSETS)}, written by '
    "`algoperf data librispeech --raw_dir=<LibriSpeech root>` (or upstream's preprocessing)"
)
_LOAD_THREADS = 8
_PREFETCH_BATCHES = 2


def read_subset_ids(data_dir: str, subset: str) -> list[str]:
    """'<subset>/<id>' of every example in `<data_dir>/<subset>.csv` (column 1, as upstream)."""
    path = os.path.join(data_dir, f'{subset}.csv')
    try:
        with open(path, newline='', encoding='utf-8') as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise FileNotFoundError(
            f'--data_dir={data_dir}: {path} not found; expected {LAYOUT}'
        ) from None
    except (UnicodeDecodeError, csv.Error) as e:  # A binary file: neither names the path.
        raise DataError(f'{path}: not a UTF-8 CSV text file ({e})') from e
    if not rows or len(rows[0]) < 2 or rows[0][1] != 'id':
        raise DataError(f'{path}: expected a header ",id" (pandas `to_csv` of column `id`)')
    for line, row in enumerate(rows[1:], 2):
        # An id names two files in <subset>/: no separator, no way out of the folder.
        if len(row) < 2 or not row[1] or os.sep in row[1] or row[1].startswith('.'):
            raise DataError(f'{path}:{line}: expected "<index>,<utterance id>", got {row!r}')
    return [f'{subset}/{row[1]}' for row in rows[1:]]


def split_ids(data_dir: str, split: str) -> list[str]:
    """Every example of a split ('train', 'eval_train', 'validation', 'test'), in order."""
    if split not in SPLITS:
        raise ValueError(f'unknown LibriSpeech split {split!r}; expected one of {list(SPLITS)}')
    ids = []
    for subset in SPLITS[split]:
        ids += read_subset_ids(data_dir, subset)
    return ids


def validate(data_dir: str) -> None:
    """Cheap layout check: tokenizer, every CSV, every subset directory, and the first
    example of each subset (dtype, shape, range): a converter's systematic mistake
    (float audio, another vocabulary) shows before any log is written. Every other
    example is checked as it is read (`load_example`)."""
    tokenizer = os.path.join(data_dir, TOKENIZER_FILE)
    if not os.path.isfile(tokenizer):
        raise FileNotFoundError(f'--data_dir={data_dir}: {tokenizer} not found; expected {LAYOUT}')
    for subset in SUBSETS:
        ids = read_subset_ids(data_dir, subset)
        if not os.path.isdir(os.path.join(data_dir, subset)):
            raise FileNotFoundError(
                f'--data_dir={data_dir}: {subset}/ not found; expected {LAYOUT}'
            )
        if ids:
            load_example(data_dir, ids[0])


# Per kind of file: (longest, dtype description, lowest and one past the highest value).
# Audio is 16-bit PCM whatever integer type stores it (upstream's preprocessing: int64);
# float audio (e.g. already scaled to [-1, 1]) would train on near-silence. Target ids
# index the model's VOCAB_SIZE outputs (CTC: one past it fails or is silently wrong).
_EXAMPLE_FIELDS = {
    'audio': (MAX_INPUT_LENGTH, 'integer 16-bit PCM samples', -(1 << 15), 1 << 15),
    'targets': (MAX_TARGET_LENGTH, 'integer token ids', 0, VOCAB_SIZE),
}


def load_example(data_dir: str, example_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(audio [T], targets [L]) as stored, after checking dtype, shape and value range.

    Raises:
      FileNotFoundError: a file the CSV lists is missing.
      DataError: naming the file and what is wrong with it.
    """
    arrays = []
    for kind, (limit, dtype, low, high) in _EXAMPLE_FIELDS.items():
        path = os.path.join(data_dir, f'{example_id}_{kind}.npy')
        try:
            a = np.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(f'{path}: not found (listed in the subset CSV)') from None
        except (OSError, ValueError) as e:
            raise DataError(f'{path}: unreadable ({e})') from e
        check_dtype(a, 'iu', path, kind, dtype)
        if a.ndim != 1 or a.shape[0] > limit:
            raise DataError(
                f'{path}: {kind} shape {a.shape}, expected one dimension of at most {limit}'
            )
        if a.size and (a.min() < low or a.max() >= high):
            bad = a[(a < low) | (a >= high)][0]
            raise DataError(f'{path}: {kind} holds {bad}, outside [{low}, {high})')
        arrays.append(a)
    return arrays[0], arrays[1]


def collate(examples: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Padded CPU batch of (audio, targets) pairs in upstream's layout and dtypes."""
    n = len(examples)
    audio = np.zeros((n, MAX_INPUT_LENGTH), dtype=np.float32)
    input_paddings = np.ones((n, MAX_INPUT_LENGTH), dtype=np.float32)
    targets = np.zeros((n, MAX_TARGET_LENGTH), dtype=np.float32)
    target_paddings = np.ones((n, MAX_TARGET_LENGTH), dtype=np.float32)
    for i, (a, t) in enumerate(examples):
        audio[i, : len(a)] = a
        input_paddings[i, : len(a)] = 0.0
        targets[i, : len(t)] = t
        target_paddings[i, : len(t)] = 0.0
    return {
        'inputs': (torch.from_numpy(audio), torch.from_numpy(input_paddings)),
        'targets': (torch.from_numpy(targets), torch.from_numpy(target_paddings)),
    }


def eval_train_ids(ids: Sequence[str], seed: int, num_examples: int) -> list[str]:
    """Upstream's eval_train Subset: `random.Random(seed).shuffle` of the indices, first k."""
    indices = list(range(len(ids)))
    random.Random(seed).shuffle(indices)
    return [ids[i] for i in indices[:num_examples]]


def train_plan(
    num_examples: int, seed: int, per_device_batch_size: int, rank: int, world_size: int
) -> Iterator[np.ndarray]:
    """Endless example indices of this rank's train batches (drop_last per epoch)."""
    global_batch = per_device_batch_size * world_size
    if num_examples < global_batch:
        raise ValueError(
            f'{num_examples} train examples cannot fill one global batch of {global_batch}'
        )
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
        epoch += 1
        for start in range(0, num_examples - global_batch + 1, global_batch):
            lo = start + rank * per_device_batch_size
            yield order[lo : lo + per_device_batch_size]


def eval_plan(
    num_examples: int, per_device_batch_size: int, rank: int, world_size: int
) -> list[tuple[np.ndarray, int]]:
    """This rank's batches of one pass: (indices padded with 0 to n, number of real ones)."""
    global_batch = per_device_batch_size * world_size
    plan = []
    for start in range(0, num_examples, global_batch):
        lo = min(start + rank * per_device_batch_size, num_examples)
        hi = min(lo + per_device_batch_size, num_examples)
        real = np.arange(lo, hi)
        plan.append(
            (np.concatenate([real, np.zeros(per_device_batch_size - len(real), int)]), len(real))
        )
    return plan


class BatchQueue:
    """Iterator over batches made in a background thread from a plan of index arrays.

    Args:
      data_dir, ids: where the examples are and their '<subset>/<id>' names.
      plan: a callable returning a fresh iterable of (indices, num_real or None) per pass.
      cycle: start the plan again when it ends (eval passes); train plans are endless.
      transform: applied to each CPU batch in the thread (e.g. the device copy).
      batches_per_pass: set for eval queues (the pass length).
    """

    def __init__(
        self,
        data_dir: str,
        ids: Sequence[str],
        plan: Callable[[], Iterator],
        cycle: bool,
        transform: Callable[[dict], dict] = lambda b: b,
        batches_per_pass: int | None = None,
    ):
        self.batches_per_pass = batches_per_pass
        self._data_dir, self._ids, self._plan = data_dir, list(ids), plan
        self._cycle, self._transform = cycle, transform
        self._queue: queue.Queue = queue.Queue(maxsize=_PREFETCH_BATCHES)
        self._pool = concurrent.futures.ThreadPoolExecutor(_LOAD_THREADS)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _make(self, indices, num_real) -> dict:
        names = [self._ids[int(i)] for i in indices]
        examples = list(self._pool.map(lambda name: load_example(self._data_dir, name), names))
        batch = collate(examples)
        if num_real is not None:
            weights = np.zeros(len(indices), dtype=np.float32)
            weights[:num_real] = 1.0
            batch['weights'] = torch.from_numpy(weights)
        return self._transform(batch)

    def _run(self) -> None:
        try:
            while True:
                for indices, num_real in self._plan():
                    self._queue.put(('batch', self._make(indices, num_real)))
                if not self._cycle:
                    self._queue.put(('end', None))
                    return
        except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
            self._queue.put(('error', e))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        kind, value = self._queue.get()
        if kind == 'error':
            self._queue.put((kind, value))
            raise value
        if kind == 'end':
            self._queue.put((kind, value))
            raise StopIteration
        return value


def load_tokenizer(path: str):
    """The SentencePiece processor in `path` (upstream's `spm_model.vocab`)."""
    import sentencepiece as spm

    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: SentencePiece model not found; expected {LAYOUT}')
    try:
        return spm.SentencePieceProcessor(model_file=path)
    except (OSError, RuntimeError) as e:
        raise DataError(f'{path}: not a SentencePiece model ({e})') from e


class Detokenizer:
    """ids -> text with a SentencePiece model, as tf-text's `detokenize` (drops EOS).

    Ids outside the model's vocabulary (only possible with a model smaller than the
    network's 1024 outputs, as in tests) read as the unknown piece.
    """

    def __init__(self, path: str):
        self.path = path
        self._sp = load_tokenizer(path)
        self._size, self._unk = self._sp.vocab_size(), self._sp.unk_id()

    def __call__(self, ids: np.ndarray) -> str:
        return self._sp.decode([int(i) if 0 <= i < self._size else self._unk for i in ids])
