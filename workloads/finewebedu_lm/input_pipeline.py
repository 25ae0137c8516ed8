"""FineWeb-Edu LM reader: 1025-token windows cut from a memory-mapped GPT-2 token stream.

Upstream (`finewebedu_lm/input_pipeline.py@a6ce1da`, algoperf_v1.md §1.6) loads HF
`save_to_disk` folders `train/` and `val/`, flattens every row's `input_ids` into one token
stream in stored order and batches it into windows of 1025 tokens (`drop_remainder`):
inputs = the first 1024, targets = the last 1024. Windows cross document boundaries; there
is no per-document mask. Here `algoperf data finewebedu_lm` (`convert.py`) has already
flattened each split into one uint16 file, so a window is a 2 KiB slice of a memmap and a
batch is one fancy-index gather; a rank reads only its own windows.

On disk (`LAYOUT`)::

    <data_dir>/finewebedu_gpt2/format.json      format, version, vocab, EOS id, per split:
                                                file, tokens, documents, bytes, sha256
    <data_dir>/finewebedu_gpt2/train.bin        uint16 little-endian token ids, no header
    <data_dir>/finewebedu_gpt2/validation.bin   (upstream's `val/`)

Kept from upstream:
    * Windows: stream[1025 i : 1025 (i + 1)], the incomplete tail dropped; inputs int32
      [b, 1024], targets int64 [b, 1024]; train batches carry `weights: None`.
    * Split map: train and eval_train read the train stream, validation the val stream.
    * Eval (the JAX semantics, which match the spec's numbers; algoperf_v1.md §1.5): an eval
      pass is ceil(num_examples / global_batch_size) global batches of the split's windows
      in stored order from its start: 391 × 256 = 100,096 validation windows and 40 × 256 =
      10,240 eval_train windows. Global batch k holds windows [k G, (k + 1) G); rank r
      takes rows [r n, (r + 1) n) of it (n = G / world), so every window is evaluated
      exactly once on any number of ranks and every rank runs the same number of batches.
      Upstream's PyTorch DDP instead has each rank cycle its own 391 local batches of
      256 / N and keep every N-th: with 4 GPUs 25,024 unique windows, each counted 4×.
    * Train: global batch = G consecutive windows of the shuffled window stream, rank r its
      contiguous n rows (upstream JAX's `batch(G)` + `shard_along_batch_dim`; upstream
      PyTorch's ranks also see 64 consecutive shuffled windows, but every rank runs the
      whole tf.data pipeline and so reads all of the data, N× redundantly).
Deliberate differences:
    * Train shuffle: a full permutation of the window indices per epoch from
      ``np.random.default_rng([seed, epoch])`` instead of tf.data's 1000-window
      `shuffle` buffer. The buffer is not reproducible without TF, and over a 9 B-token
      stream a 1000-window buffer only mixes windows within ~1 M tokens of each other
      (≈ 0.01% of an epoch), so batches stay correlated with the stored document order;
      a full permutation is the limit the buffer approximates. Same seed → same order.
    * Batches run across epoch ends (fixed shapes); upstream's `batch(drop_remainder=False)`
      before `repeat()` makes one short batch per epoch. Never reached at the 72,000-step
      hint (0.53 epoch at batch 64).
    * Eval padding, only reached when a split has fewer windows than the pass asks for
      (never with the real data): upstream fills padded rows with PAD_ID = -1 in inputs and
      targets and derives `weights = inputs != -1`. -1 is neither a valid embedding row nor
      a valid `cross_entropy` target, so padded rows here hold id 0 in inputs and targets
      and carry the mask in `weights` (0.0); weights of real rows are 1.0.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch

from algoperf.data_io import read_format_file
from algoperf.errors import DataError
from algoperf.prefetch import Prefetcher

DATASET_DIR = 'finewebedu_gpt2'
FORMAT_NAME = 'algoperf-finewebedu-tokens'
FORMAT_VERSION = 1
SPLIT_FILES = {'train': 'train.bin', 'validation': 'validation.bin'}
STREAM_OF_SPLIT = {'train': 'train', 'eval_train': 'train', 'validation': 'validation'}
SEQUENCE_LENGTH = 1024
WINDOW = SEQUENCE_LENGTH + 1  # inputs = window[:-1], targets = window[1:].
VOCAB_SIZE = 50_257  # GPT-2.
EOS_ID = 50_256  # GPT-2's <|endoftext|>, appended to every document.
PAD_ID = -1  # Upstream's eval padding value (not written here: see the module docstring).
TOKEN_DTYPE = np.dtype('<u2')
NUM_VALIDATION_EXAMPLES = 100_000  # Upstream's split sizes (sequences).
NUM_EVAL_TRAIN_EXAMPLES = 10_000
LAYOUT = (
    f'<data_dir>/{DATASET_DIR}/{{train,validation}}.bin (uint16 GPT-2 tokens) and '
    f'<data_dir>/{DATASET_DIR}/format.json, written by `algoperf data finewebedu_lm '
    '--hf_dir=<dir with train/ and val/>` or `--raw_dir=<parquet/jsonl shards> --tokenizer=<file>`'
)
_TOOL = 'algoperf data finewebedu_lm'
_PREFETCH_DEPTH = 2


class TokenStream:
    """One split's memory-mapped token stream, viewed as [num_windows, 1025] windows.

    Attributes:
      path: the `.bin` file; tokens: uint16 memmap of all its tokens; num_windows: whole
      windows in it (the incomplete tail is never read).
    """

    def __init__(self, path: str, num_tokens: int) -> None:
        self.path = path
        self.num_windows = num_tokens // WINDOW
        if self.num_windows < 1:
            raise DataError(
                f'{path}: {num_tokens} tokens, fewer than one {WINDOW}-token window; '
                f'convert more text (`{_TOOL}`)'
            )
        self.tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode='r', shape=(num_tokens,))
        self._windows = self.tokens[: self.num_windows * WINDOW].reshape(self.num_windows, WINDOW)

    def windows(self, ids: np.ndarray) -> np.ndarray:
        """uint16 [len(ids), 1025]: the windows `ids` (one gather; only their pages are read)."""
        return np.asarray(self._windows[ids])

    def window_range(self, start: int, stop: int) -> np.ndarray:
        """uint16 [stop - start, 1025]: consecutive windows (one contiguous read)."""
        return np.asarray(self._windows[start:stop])


def to_batch(windows: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """{'inputs': int32 [b, 1024], 'targets': int64 [b, 1024], 'weights'} CPU tensors."""
    return {
        'inputs': torch.from_numpy(windows[:, :-1].astype(np.int32)),
        'targets': torch.from_numpy(windows[:, 1:].astype(np.int64)),
        'weights': None if weights is None else torch.from_numpy(weights),
    }


# ---- on disk -----------------------------------------------------------------------------------
def read_format(data_dir: str) -> dict:
    """format.json, checked against this reader (one-line errors naming the file)."""
    try:
        meta = read_format_file(data_dir, DATASET_DIR, FORMAT_NAME, FORMAT_VERSION, LAYOUT, _TOOL)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise DataError(str(e)) from None
    meta_path = os.path.join(data_dir, DATASET_DIR, 'format.json')
    vocab = meta.get('vocab_size')
    if not isinstance(vocab, int) or not 0 < vocab <= VOCAB_SIZE:
        raise DataError(
            f'{meta_path}: vocab_size {vocab!r}; the model embeds {VOCAB_SIZE} ids; rerun `{_TOOL}`'
        )
    for split, name in SPLIT_FILES.items():
        entry = meta.get('splits', {}).get(split)
        if not isinstance(entry, dict) or entry.get('file') != name:
            raise DataError(f'{meta_path}: no {split!r} split entry; rerun `{_TOOL}`')
        if not isinstance(entry.get('tokens'), int) or entry['tokens'] < 0:
            raise DataError(f'{meta_path}: {split}.tokens is not a count; rerun `{_TOOL}`')
    return meta


def load_stream(data_dir: str, split: str, meta: dict | None = None) -> TokenStream:
    """The token stream `split` reads ('train', 'eval_train' or 'validation'), size-checked."""
    if split not in STREAM_OF_SPLIT:
        raise ValueError(f'unknown split {split!r}; expected one of {sorted(STREAM_OF_SPLIT)}')
    meta = read_format(data_dir) if meta is None else meta
    name = STREAM_OF_SPLIT[split]
    entry = meta['splits'][name]
    path = os.path.join(data_dir, DATASET_DIR, entry['file'])
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--data_dir={data_dir}: {path} not found; expected {LAYOUT}')
    size, expected = os.path.getsize(path), entry['tokens'] * TOKEN_DTYPE.itemsize
    if size != expected:
        raise DataError(
            f'{path}: {size:,} bytes, but format.json says {entry["tokens"]:,} uint16 tokens '
            f'({expected:,} bytes); rerun `{_TOOL}`'
        )
    return TokenStream(path, entry['tokens'])


def validate_data_dir(data_dir: str) -> None:
    """Fails with one line naming the missing or bad file before any log is written."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f'--data_dir={data_dir}: not a directory; expected {LAYOUT}')
    meta = read_format(data_dir)
    for split in SPLIT_FILES:
        load_stream(data_dir, split, meta)


# ---- train -------------------------------------------------------------------------------------
class TrainBatches(Iterator[dict]):
    """Endless train batches of one rank, optionally made `depth` batches ahead in a thread.

    Global batch k is windows [k G, (k + 1) G) of the shuffled window stream (epoch e is
    ``default_rng([seed, e]).permutation(num_windows)``; batches run across epoch ends);
    this rank's batch is its rows [r n, (r + 1) n), n = G / world_size.

    Attributes:
      step: the index of the global batch the next `next()` returns.
    """

    def __init__(
        self,
        stream: TokenStream,
        seed: int,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        prefetch: bool = True,
    ) -> None:
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(
                f'global batch size {global_batch_size} is not a positive multiple of the '
                f'{world_size} ranks'
            )
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} outside 0..{world_size - 1}')
        self.stream = stream
        self.seed = int(seed) % (1 << 64)  # default_rng takes non-negative entropy.
        self.global_batch_size = global_batch_size
        self.per_rank = global_batch_size // world_size
        self._first_row = rank * self.per_rank
        self.prefetch = prefetch
        self.step = 0
        self._perms: dict[int, np.ndarray] = {}
        self._source: Iterator[dict] | None = None
        self._start()

    def permutation(self, epoch: int) -> np.ndarray:
        """The window order of `epoch` (the last two are cached: 8 bytes per window)."""
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.stream.num_windows)
            self._perms = {e: p for e, p in self._perms.items() if e == epoch - 1}
            self._perms[epoch] = perm
        return perm

    def window_ids(self, step: int) -> np.ndarray:
        """int64 [n]: the windows of this rank's rows of global batch `step`."""
        position = (
            step * self.global_batch_size
            + self._first_row
            + np.arange(self.per_rank, dtype=np.int64)
        )
        epoch, index = np.divmod(position, self.stream.num_windows)
        ids = np.empty(self.per_rank, dtype=np.int64)
        for e in np.unique(epoch).tolist():  # One or two epochs (more only for a tiny stream).
            here = epoch == e
            ids[here] = self.permutation(e)[index[here]]
        return ids

    def batch(self, step: int) -> dict:
        """This rank's CPU batch of global batch `step` (random access; no state changes)."""
        return to_batch(self.stream.windows(self.window_ids(step)))

    def _generate(self, start: int) -> Iterator[dict]:
        step = start
        while True:
            yield self.batch(step)
            step += 1

    def _start(self) -> None:
        source = self._generate(self.step)
        self._source = Prefetcher(source, depth=_PREFETCH_DEPTH) if self.prefetch else source

    def __next__(self) -> dict:
        batch = next(self._source)
        self.step += 1
        return batch

    def fast_forward(self, num_batches: int) -> None:
        """Skips `num_batches` batches in O(1) (the runner calls it on resume)."""
        if num_batches < 0:
            raise ValueError(f'cannot fast-forward by {num_batches} batches')
        self.close()
        self.step += num_batches
        self._start()

    def close(self) -> None:
        """Stops the prefetch thread (if any)."""
        if isinstance(self._source, Prefetcher):
            self._source.close()


def make_train_iterator(
    data_dir: str,
    seed: int,
    global_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    prefetch: bool = True,
) -> TrainBatches:
    """This rank's endless train batches: {'inputs': int32 [n, 1024], 'targets': int64
    [n, 1024], 'weights': None} CPU tensors, n = global_batch_size // world_size, built in
    a background thread (`algoperf.prefetch.Prefetcher`) unless `prefetch=False`.
    `fast_forward(k)` skips k batches."""
    stream = load_stream(data_dir, 'train')
    return TrainBatches(stream, seed, global_batch_size, rank, world_size, prefetch)


# ---- eval --------------------------------------------------------------------------------------
def eval_num_windows(num_windows: int, global_batch_size: int, num_examples: int) -> int:
    """Windows one eval pass reads: ceil(num_examples / G) whole global batches, as far as
    the split goes (the JAX semantics: 100,000 -> 100,096 at G = 256)."""
    return min(math.ceil(num_examples / global_batch_size) * global_batch_size, num_windows)


class EvalBatches(Iterator[dict]):
    """One pass over windows [0, num_windows) of a stream in order: global batch k holds
    windows [k G, (k + 1) G), this rank its rows [r n, (r + 1) n); rows past the end are
    padding (ids 0, weight 0). Every rank yields `batches_per_pass` batches."""

    def __init__(
        self,
        stream: TokenStream,
        num_windows: int,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(
                f'eval batch size {global_batch_size} is not a positive multiple of the '
                f'{world_size} ranks'
            )
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} outside 0..{world_size - 1}')
        self.stream = stream
        self.num_windows = num_windows
        self.global_batch_size = global_batch_size
        self.per_rank = global_batch_size // world_size
        self._first_row = rank * self.per_rank
        self.batches_per_pass = math.ceil(num_windows / global_batch_size)
        self._next = 0

    def __len__(self) -> int:
        return self.batches_per_pass

    def __next__(self) -> dict:
        k = self._next
        if k >= self.batches_per_pass:
            raise StopIteration
        self._next += 1
        start = k * self.global_batch_size + self._first_row
        stop = min(start + self.per_rank, self.num_windows)
        real = max(stop - start, 0)
        if real == self.per_rank:  # Every batch but (at most) the last: no padding copy.
            ones = np.ones((self.per_rank, SEQUENCE_LENGTH), dtype=np.float32)
            return to_batch(self.stream.window_range(start, stop), ones)
        windows = np.zeros((self.per_rank, WINDOW), dtype=TOKEN_DTYPE)
        weights = np.zeros((self.per_rank, SEQUENCE_LENGTH), dtype=np.float32)
        if real:
            windows[:real] = self.stream.window_range(start, stop)
            weights[:real] = 1.0
        return to_batch(windows, weights)


def eval_batches(
    data_dir: str,
    split: str,
    global_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    num_examples: int | None = None,
) -> EvalBatches:
    """This rank's batches of ONE eval pass of `split` ('eval_train' or 'validation'):
    {'inputs', 'targets', 'weights': float32 [n, 1024]} CPU tensors. The pass covers the
    split's first ceil(num_examples / G) · G windows in stored order (default num_examples:
    upstream's 100,000 validation / 10,000 eval_train sequences), capped at the windows
    the split has; each is evaluated exactly once across the ranks."""
    if split not in ('eval_train', 'validation'):
        raise ValueError(f'eval split {split!r}; expected eval_train or validation')
    stream = load_stream(data_dir, split)
    if num_examples is None:
        num_examples = NUM_VALIDATION_EXAMPLES if split == 'validation' else NUM_EVAL_TRAIN_EXAMPLES
    count = eval_num_windows(stream.num_windows, global_batch_size, num_examples)
    return EvalBatches(stream, count, global_batch_size, rank, world_size)
