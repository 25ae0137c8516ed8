"""WMT de->en reader: upstream's filtering, packing and padding, built per rank from `.npy` arrays.

Upstream (algoperf/workloads/wmt/input_pipeline.py, spec §6.8) reads TFDS
`wmt17_translate/de-en` (train) and `wmt14_translate/de-en` (validation, test), tokenizes
every sentence with tf-text SentencePiece on the fly (EOS appended), builds the global
batch in one process and broadcasts it to every rank. Here the sentences are tokenized
once by `algoperf data wmt` (`convert.py`) into flat token arrays plus offsets; every rank
computes the same packing plan from the per-sentence lengths and materialises only its
own rows of each global batch.

On disk (`LAYOUT`)::

    <data_dir>/wmt_sentencepiece_model                 the SentencePiece model (upstream's name)
    <data_dir>/wmt_de_en/format.json                   format, version, counts, model sha256
    <data_dir>/wmt_de_en/{train,validation,test}/{inputs,targets}_tokens.npy
        uint16 token ids of every sentence of the split, concatenated, EOS included
    <data_dir>/wmt_de_en/{train,validation,test}/{inputs,targets}_offsets.npy
        int64 [pairs + 1]: sentence i is tokens[offsets[i]:offsets[i + 1]]

inputs = German, targets = English (TFDS `supervised_keys`). SentencePiece ids are
upstream's (the trainer's defaults): unk 0 (also the padding value, as upstream),
bos 1 (unused), eos 2.

Kept from upstream:
    * Filter: pairs whose longer side (EOS included) exceeds 256 tokens are dropped, in
      every split.
    * Train packing (`pack_dataset`): the example stream (shuffled, repeated) is cut into
      consecutive chunks of 256 examples (upstream's `padded_batch(256)`); within a chunk
      examples are appended greedily, in order, to the current row while both sides still
      fit in 256 tokens, otherwise the row is closed and a new one started; the chunk's last
      row is closed at its end. A sentence is its tokens up to its number of non-zero
      tokens (upstream's padding strip, which also cuts a sentence holding an unk token);
      positions count from 0 per sentence, segmentation = (1 + number of sentence starts
      before the token) where the token is non-zero, else 0. Rows are batched by the
      global batch size, drop-remainder; rank r gets rows [r n, (r + 1) n) of each global
      batch (upstream's `shard_and_maybe_pad_np`).
    * Eval: one sentence pair per row, zero-padded to 256; global batches of the split in
      order (eval_train: see below), the last one padded with all-zero rows to the global
      batch; `ceil(num_examples / global_batch_size)` batches, then the same pass again
      (upstream's `take(num_batches).repeat()`; BLEU decodes the second pass).
    * `weights = targets > 0`, AND the padding-row mask in eval.
Deliberate differences:
    * Train shuffle: a full permutation per epoch from ``default_rng([data_rng[0], epoch])``
      instead of TF's 1024-example buffer (not reproducible without TF; a full permutation
      is the limit the buffer approximates, and a 1024 buffer over TFDS's file order mixes
      far less).
    * eval_train: the first ``num_examples`` kept train pairs of one fixed permutation
      (``default_rng([data_rng[0], 1 << 20])``), the same pass every eval. Upstream draws
      them from its 1024-buffer shuffle, i.e. from the first few thousand pairs in file
      order, reshuffled at every repetition.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import numpy as np
import torch

from algoperf.data_io import check_dtype, check_range, read_format_file
from algoperf.errors import DataError

DATASET_DIR = 'wmt_de_en'
VOCAB_FILE = 'wmt_sentencepiece_model'  # Upstream's name, directly under data_dir.
FORMAT_NAME = 'algoperf-wmt-npy'
FORMAT_VERSION = 1
SPLITS = ('train', 'validation', 'test')
KEYS = ('inputs', 'targets')  # German, English.
MAX_LENGTH = 256  # Filter length, packed row length and eval padding.
PACK_CHUNK = 256  # Upstream's padded_batch size before packing (= max length).
EOS_ID = 2
VOCAB_SIZE = 32_000  # The model's embedding rows: every token id must be below it.
_SCAN_CHUNK = 1 << 24  # Tokens per pass when counting unk (0) ids.
TRAIN_KEYS = (
    'inputs',
    'inputs_position',
    'inputs_segmentation',
    'targets',
    'targets_position',
    'targets_segmentation',
    'weights',
)
EVAL_KEYS = ('inputs', 'targets', 'weights')
LAYOUT = (
    f'<data_dir>/{VOCAB_FILE} and <data_dir>/{DATASET_DIR}/{{train,validation,test}}/'
    f'{{inputs,targets}}_{{tokens,offsets}}.npy plus <data_dir>/{DATASET_DIR}/format.json, '
    'written by `algoperf data wmt --raw_dir=<parallel text dir> --data_dir=<data_dir>`'
)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


class TokenSplit:
    """One split's sentence pairs (memory-mapped token arrays and offsets).

    Attributes:
      tokens, offsets: {'inputs', 'targets'} -> flat ids, int64 [pairs + 1] offsets.
      lengths: {'inputs', 'targets'} -> int64 [pairs] tokens per sentence (EOS included).
      kept: int64 indices of the pairs that pass the 256-token filter, in order.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.tokens, self.offsets, self.lengths = {}, {}, {}
        for key in KEYS:
            tokens_path = os.path.join(directory, f'{key}_tokens.npy')
            offsets_path = os.path.join(directory, f'{key}_offsets.npy')
            try:
                tokens = np.load(tokens_path, mmap_mode='r')
                offsets = np.load(offsets_path)
            except (OSError, ValueError) as e:
                raise DataError(
                    f'{directory}: unreadable wmt split ({e}); expected {LAYOUT}'
                ) from e
            # Float ids would be cast silently into the int64 batches; ids past the
            # vocabulary fail in the embedding as "index out of range in self".
            check_dtype(tokens, 'iu', tokens_path, f'{key} tokens', 'integer token ids')
            check_dtype(offsets, 'iu', offsets_path, f'{key} offsets', 'integer offsets')
            if tokens.ndim != 1:
                raise DataError(
                    f'{tokens_path}: {key} tokens have shape {tokens.shape}, expected one dimension'
                )
            offsets = offsets.astype(np.int64)
            if (
                offsets.ndim != 1
                or len(offsets) < 1
                or offsets[0] != 0
                or offsets[-1] != len(tokens)
                or (np.diff(offsets) < 0).any()
            ):
                raise DataError(
                    f'{offsets_path}: does not span {key}_tokens.npy in order '
                    f'({len(tokens)} tokens); rerun `algoperf data wmt`'
                )
            check_range(tokens, 0, VOCAB_SIZE, tokens_path, f'{key} token id')
            self.tokens[key], self.offsets[key] = tokens, offsets
            self.lengths[key] = np.diff(offsets)
        if len(self.lengths['inputs']) != len(self.lengths['targets']):
            raise DataError(
                f'{directory}: {len(self.lengths["inputs"])} inputs but '
                f'{len(self.lengths["targets"])} targets'
            )
        longest = np.maximum(self.lengths['inputs'], self.lengths['targets'])
        self.kept = np.flatnonzero(longest <= MAX_LENGTH).astype(np.int64)
        self._packed_lengths = None

    def __len__(self) -> int:
        return len(self.lengths['inputs'])

    def sentence(self, key: str, i: int) -> np.ndarray:
        return np.asarray(self.tokens[key][self.offsets[key][i] : self.offsets[key][i + 1]])

    def packed_lengths(self) -> dict[str, np.ndarray]:
        """Per pair and side, the sentence length packing uses: its non-zero token count
        (upstream strips padding by counting non-zero ids, so an unk (0) shortens it)."""
        if self._packed_lengths is None:
            self._packed_lengths = {}
            for key in KEYS:
                tokens, offsets = self.tokens[key], self.offsets[key]
                zeros = np.zeros(len(offsets) - 1, dtype=np.int64)
                for start in range(0, len(tokens), _SCAN_CHUNK):  # Bounded memory.
                    at = start + np.flatnonzero(
                        np.asarray(tokens[start : start + _SCAN_CHUNK]) == 0
                    )
                    owner = np.searchsorted(offsets, at, side='right') - 1
                    zeros += np.bincount(owner, minlength=len(zeros))
                self._packed_lengths[key] = self.lengths[key] - zeros
        return self._packed_lengths


def read_format(data_dir: str) -> dict:
    """format.json, checked against this reader and the SentencePiece model beside it."""
    meta = read_format_file(
        data_dir, DATASET_DIR, FORMAT_NAME, FORMAT_VERSION, LAYOUT, 'algoperf data wmt'
    )
    vocab = os.path.join(data_dir, VOCAB_FILE)
    if not os.path.exists(vocab):
        raise FileNotFoundError(f'--data_dir={data_dir}: {vocab} not found; expected {LAYOUT}')
    if file_sha256(vocab) != meta.get('vocab_sha256'):
        raise DataError(
            f'{vocab}: not the SentencePiece model {os.path.join(data_dir, DATASET_DIR, "format.json")} '
            'was tokenized with; rerun `algoperf data wmt`'
        )
    return meta


def load_split(data_dir: str, split: str) -> TokenSplit:
    """The split's arrays; eval_train reads the train split."""
    read_format(data_dir)
    return TokenSplit(
        os.path.join(data_dir, DATASET_DIR, 'train' if split == 'eval_train' else split)
    )


def load_tokenizer(data_dir: str):
    """The `sentencepiece.SentencePieceProcessor` of `<data_dir>/wmt_sentencepiece_model`."""
    import sentencepiece as spm

    path = os.path.join(data_dir, VOCAB_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'--data_dir={data_dir}: {path} not found; expected {LAYOUT}')
    return spm.SentencePieceProcessor(model_file=path)


# ---- packing -----------------------------------------------------------------------------------
def pack_chunk(lengths_in: np.ndarray, lengths_tgt: np.ndarray) -> list[tuple[int, int]]:
    """Row boundaries (start, end) over one chunk of examples, greedy as upstream's
    `_pack_with_tf_ops`: append while both sides fit in MAX_LENGTH, else close the row;
    the chunk's last row is closed at its end."""
    rows = []
    start = 0
    used_in = used_tgt = 0
    for i, (a, b) in enumerate(zip(lengths_in.tolist(), lengths_tgt.tolist())):
        if used_in + a > MAX_LENGTH or used_tgt + b > MAX_LENGTH:
            rows.append((start, i))
            start, used_in, used_tgt = i, 0, 0
        used_in += a
        used_tgt += b
    if len(lengths_in):
        rows.append((start, len(lengths_in)))
    return rows


def packed_rows(split: TokenSplit, order: np.ndarray) -> Iterator[np.ndarray]:
    """The packed rows (arrays of pair indices) of the example stream `order`, cut into
    chunks of PACK_CHUNK; a short final chunk is packed too."""
    lengths = split.packed_lengths()
    for c in range(0, len(order), PACK_CHUNK):
        chunk = order[c : c + PACK_CHUNK]
        for s, e in pack_chunk(lengths['inputs'][chunk], lengths['targets'][chunk]):
            yield chunk[s:e]


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) over (starts, counts), without a Python loop."""
    total = int(counts.sum())
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return np.arange(total, dtype=np.int64) + shift


def materialize_packed(split: TokenSplit, rows: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """One CPU train batch (TRAIN_KEYS, int64 [len(rows), 256]) of packed rows, built with
    flat gathers: each row's sentences back to back from column 0, positions from 0 per
    sentence, segment = 1 + the sentence's index in its row where the token is non-zero
    (upstream's cumsum(position == 0) * (token != 0))."""
    lengths = split.packed_lengths()
    ids = np.concatenate(rows)
    per_row = np.array([len(r) for r in rows])
    row_of = np.repeat(np.arange(len(rows)), per_row)
    first = np.cumsum(per_row) - per_row  # Index in `ids` of each row's first sentence.
    segment = np.arange(len(ids)) - first[row_of] + 1
    out = {k: np.zeros((len(rows), MAX_LENGTH), dtype=np.int64) for k in TRAIN_KEYS}
    for key in KEYS:
        counts = lengths[key][ids]
        start = np.cumsum(counts) - counts  # Flat start of each sentence.
        column = start - start[first][row_of]  # Its first column in its row.
        position = np.arange(int(counts.sum())) - np.repeat(start, counts)
        r = np.repeat(row_of, counts)
        c = np.repeat(column, counts) + position
        tokens = split.tokens[key][concat_ranges(split.offsets[key][ids], counts)]
        out[key][r, c] = tokens
        out[f'{key}_position'][r, c] = position
        out[f'{key}_segmentation'][r, c] = np.repeat(segment, counts) * (tokens != 0)
    out['weights'] = (out['targets'] > 0).astype(np.int64)
    return {k: torch.from_numpy(v) for k, v in out.items()}


def materialize_padded(split: TokenSplit, ids: np.ndarray, rows: int) -> dict[str, torch.Tensor]:
    """One CPU eval batch (EVAL_KEYS, int64 [rows, 256]): pair ids[i] in row i, zero rows after."""
    out = {k: np.zeros((rows, MAX_LENGTH), dtype=np.int64) for k in KEYS}
    for key in KEYS:
        for r, i in enumerate(ids.tolist()):
            s = split.sentence(key, i)
            out[key][r, : len(s)] = s
    out['weights'] = (out['targets'] > 0).astype(np.int64)  # All-zero rows weigh 0.
    return {k: torch.from_numpy(v) for k, v in out.items()}


def train_order(split: TokenSplit, seed: int) -> Iterator[np.ndarray]:
    """Endless epochs of the kept pairs, each a permutation from default_rng([seed, epoch])."""
    epoch = 0
    while True:
        yield split.kept[np.random.default_rng([seed, epoch]).permutation(len(split.kept))]
        epoch += 1


def train_batches(
    split: TokenSplit, seed: int, global_batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless train batches of this rank: its n = global // world rows of each global batch
    of packed rows. Chunks of PACK_CHUNK examples run across epoch ends (repeat, then pack)."""
    if not len(split.kept):
        raise DataError(f'{split.directory}: no sentence pair of at most {MAX_LENGTH} tokens')
    n = global_batch_size // world_size
    mine = slice(rank * n, (rank + 1) * n)
    carry = np.zeros(0, dtype=np.int64)
    batch: list[np.ndarray] = []
    for epoch in train_order(split, seed):
        stream = np.concatenate([carry, epoch])
        whole = len(stream) - len(stream) % PACK_CHUNK
        carry = stream[whole:]
        for row in packed_rows(split, stream[:whole]):
            batch.append(row)
            if len(batch) == global_batch_size:
                yield materialize_packed(split, batch[mine])
                batch = []


def eval_ids(split: TokenSplit, split_name: str, seed: int, num_examples: int | None) -> np.ndarray:
    """The pairs an eval reads: the first `num_examples` kept (eval_train: of a fixed shuffle)."""
    order = split.kept
    if split_name == 'eval_train':
        order = order[np.random.default_rng([seed, 1 << 20]).permutation(len(order))]
    return order if num_examples is None else order[:num_examples]


def eval_batches(
    split: TokenSplit, ids: np.ndarray, global_batch_size: int, rank: int = 0, world_size: int = 1
) -> list[dict[str, torch.Tensor]]:
    """This rank's batches of one pass over `ids`: ceil(len / global) global batches, the last
    padded with zero rows, each rank its n rows of each (every rank the same count)."""
    n = global_batch_size // world_size
    batches = []
    for start in range(0, len(ids), global_batch_size):
        rows = ids[start : start + global_batch_size][rank * n : (rank + 1) * n]
        batches.append(materialize_padded(split, rows, n))
    return batches
