"""Criteo 1TB input pipeline: upstream's files, splits and batches, read per rank.

Upstream (algoperf/workloads/criteo1tb/input_pipeline.py, spec §6.1) builds one tf.data
pipeline on rank 0 and broadcasts the whole global batch (262,144 x 39 floats, ~41 MB) to
every rank each step. Here every rank reads the same byte stream itself but parses only
its rows: finding line ends is a memchr pass (~10 GB/s: 5 ms per 50 MB on the 2-core dev
box), while parsing and hashing a line costs ~0.65 us per core (~0.4 GB/s), so each rank
does 1/world of the parse work and nothing is broadcast. At upstream's batch of 262,144 on
8 ranks that is ~21 ms per step on one core (torchrun sets OMP_NUM_THREADS=1; the parse
uses torch's intra-op threads), against a ~0.7 s step.

Semantics kept from upstream:
    * Files ``<data_dir>/day_<d>_<NN>``: train and eval_train = ``day_0_*`` .. ``day_22_*``
      (glob); test = ``day_23_00`` .. ``day_23_18``; validation = ``day_23_19`` ..
      ``day_23_35``; missing ones are skipped as tf.io.matching_files does; sorted, as
      TF's MatchingFiles sorts (so ``day_10_00`` precedes ``day_1_00``).
    * Lines of consecutive files form one stream (TextLineDataset via flat_map); no
      example-level shuffle. A global batch is ``global_batch_size`` consecutive lines;
      rank ``r`` gets rows ``[r*b, (r+1)*b)`` with ``b = global_batch_size // world_size``.
    * train: drop the last partial batch of every pass and repeat forever, the file
      order reshuffled each pass; eval splits: one pass, the last batch padded with zero
      rows to the full batch, ``weights`` 1 for real rows and 0 for padding.
    * ``num_batches`` takes that many batches; ``repeat_final_dataset`` then replays them.
Deliberate differences:
    * File order: upstream shuffles train and eval_train files with list_files(seed=
      data_rng[0]) and then again with an unseeded shuffle(1024), so its order is not
      reproducible. Here pass ``p`` uses ``numpy.random.default_rng([data_rng[0], p])``.
    * ``repeat_final_dataset`` replays the same batches (upstream re-lists the files, and
      so reshuffles eval_train, on each replay).
    * Every batch, train included, carries ``weights`` (upstream's PyTorch queue does too).
    * Opening a split parses the first 64 KiB of each of its files (`check_file_head`:
      a gzip, binary or other-layout file fails at the call, not hours in).
    * A malformed line raises ``CriteoFormatError`` naming ``file:line``; with
      ``skip_malformed=True`` its row becomes a zero row with weight 0 and is counted in
      ``dataset.skipped_lines`` (it keeps its place so the ranks' shards stay aligned).
"""

import glob
import os
from collections.abc import Iterator

import numpy as np
import torch

from algoperf.errors import DataError
from kernels import criteo_tsv

_NUM_TRAIN_DAYS = 23
_NUM_DAY_23_FILES = 36
_NUM_TEST_FILES = _NUM_DAY_23_FILES // 2 + 1  # 19: day_23_00..18; validation is 19..35
SPLITS = ('train', 'eval_train', 'validation', 'test')
# 64 MiB per read: ~270k lines of ~250 B, enough to keep every parse thread busy and to
# make the per-chunk Python bookkeeping (~1 ms) negligible next to the parse.
DEFAULT_CHUNK_BYTES = 64 << 20


# Bytes of each file `check_file_head` parses at open: ~250 lines of ~250 B.
HEAD_BYTES = 64 << 10
_GZIP_MAGIC = b'\x1f\x8b'


class CriteoFormatError(DataError):
    """A malformed line in a Criteo TSV file; the message starts with ``path:line:``.

    A `DataError` (user input: `algoperf run` prints the line and exits 2) and so a
    ValueError.
    """


def check_file_head(path: str, vocab_sizes=criteo_tsv.VOCAB_SIZES) -> None:
    """Parses the lines in the first 64 KiB of `path`; raises on the first malformed one.

    What can be checked cheaply at open: a file that is still gzip-compressed, binary, or
    of another layout fails here, naming ``path:line``, rather than at its first batch
    (for a late train file, hours into a run). Later lines are checked as they are read.
    An empty file passes (it holds no lines).
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(HEAD_BYTES)
            at_eof = not f.read(1)
    except OSError as e:
        raise DataError(f'{path}: cannot read ({e.strerror or e})') from e
    if head.startswith(_GZIP_MAGIC):
        raise CriteoFormatError(
            f'{path}:1: gzip-compressed; expected the unzipped TSV (`gunzip day_<d>.gz`, '
            'then `split -a 2 -d -l 5000000`)'
        )
    cut = head.rfind(b'\n')
    if cut < 0 and not at_eof:
        raise CriteoFormatError(
            f'{path}:1: no line end in the first {HEAD_BYTES >> 10} KiB; expected Criteo TSV '
            'lines (label, 13 integers, 26 hex strings)'
        )
    tail = head[cut + 1 :]
    # An unterminated last line is a line at EOF, unless it is only '\r' (TF's ReadLine).
    body = head if at_eof and tail.replace(b'\r', b'') else head[: cut + 1]
    if not body:
        return
    data = torch.frombuffer(bytearray(body), dtype=torch.uint8)
    ends = criteo_tsv.find_newlines(data).numpy().astype(np.int64)
    if body[-1:] != b'\n':
        ends = np.append(ends, len(body))
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    _, _, errors = criteo_tsv.parse_criteo_tsv(data, starts, ends, vocab_sizes)
    if len(errors):
        i, code, detail = (int(v) for v in errors[0])
        line = body[int(starts[i]) : int(ends[i])]
        raise CriteoFormatError(f'{path}:{i + 1}: {criteo_tsv.describe_error(line, code, detail)}')


def split_files(split: str, data_dir: str) -> list[str]:
    """Upstream's sorted file list of ``split`` under ``data_dir``."""
    if split not in SPLITS:
        raise ValueError(f'criteo1tb: unknown split {split!r}; expected one of {SPLITS}')
    if split in ('train', 'eval_train'):
        patterns = [f'day_{d}_*' for d in range(_NUM_TRAIN_DAYS)]
        expected = 'day_<0..22>_<NN>'
    else:
        first, stop = (
            (0, _NUM_TEST_FILES) if split == 'test' else (_NUM_TEST_FILES, _NUM_DAY_23_FILES)
        )
        patterns = [f'day_23_{s:02d}' for s in range(first, stop)]
        expected = f'day_23_{first:02d} .. day_23_{stop - 1:02d}'
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f'criteo1tb: data_dir {data_dir!r} is not a directory; expected the Criteo 1TB '
            f'files day_<d>_<NN> in it (the {split} split reads {expected})'
        )
    files = sorted(
        path
        for pattern in patterns
        for path in glob.glob(os.path.join(glob.escape(data_dir), pattern))
        if os.path.isfile(path)
    )
    if not files:
        raise FileNotFoundError(
            f'criteo1tb: no {split} files in {data_dir!r}; expected {expected} '
            '(plain-text TSV, `split -a 2 -d -l 5000000 day_<d>`)'
        )
    return files


def _line_chunks(
    path: str, chunk_bytes: int
) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray, int]]:
    """Yields ``(data, starts, ends, first_line_number)`` per chunk of whole lines.

    ``data`` is a view of a reused buffer: valid until the next chunk is requested. A
    last line without ``'\\n'`` is a line; one that is only ``'\\r'`` is not (TF's ReadLine).
    """
    buf = bytearray(chunk_bytes)
    carry, line_no = 0, 1
    with open(path, 'rb', buffering=0) as f:
        while True:
            got = f.readinto(memoryview(buf)[carry:])
            n = carry + got
            if got == 0:  # EOF: the unterminated tail, if any
                if buf[:n].replace(b'\r', b''):
                    data = torch.frombuffer(buf, dtype=torch.uint8, count=n)
                    yield data, np.zeros(1, np.int64), np.full(1, n, np.int64), line_no
                return
            data = torch.frombuffer(buf, dtype=torch.uint8, count=n)
            ends = criteo_tsv.find_newlines(data).numpy()
            if len(ends) == 0:
                if n == len(buf):  # one line longer than the buffer: grow it (a new
                    # buffer: the old one is still exported to `data` and cannot resize)
                    grown = bytearray(2 * len(buf))
                    grown[:n] = buf
                    buf = grown
                carry = n
                continue
            starts = np.empty_like(ends)
            starts[0] = 0
            starts[1:] = ends[:-1] + 1
            yield data, starts, ends, line_no
            line_no += len(ends)
            tail = int(ends[-1]) + 1
            carry = n - tail
            buf[:carry] = buf[tail:n]


class _Rows:
    """FIFO of parsed row blocks (inputs, targets, weights), taken ``b`` rows at a time."""

    def __init__(self):
        self.blocks: list[tuple[torch.Tensor, ...]] = []
        self.count = 0

    def push(self, block: tuple[torch.Tensor, ...]) -> None:
        if len(block[1]):
            self.blocks.append(block)
            self.count += len(block[1])

    def take(self, k: int) -> list[torch.Tensor]:
        out, need = [], k
        while need:
            block = self.blocks[0]
            if len(block[1]) <= need:
                out.append(self.blocks.pop(0))
                need -= len(block[1])
            else:
                out.append(tuple(t[:need] for t in block))
                self.blocks[0] = tuple(t[need:] for t in block)
                need = 0
        self.count -= k
        return [torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*out)]


class CriteoDataset(Iterator[dict[str, torch.Tensor]]):
    """Iterator of this rank's batches: ``inputs`` (b, 39), ``targets`` (b,), ``weights`` (b,)."""

    def __init__(
        self,
        split,
        data_dir,
        data_rng,
        global_batch_size,
        num_batches=None,
        repeat_final_dataset=False,
        rank=0,
        world_size=1,
        *,
        skip_malformed=False,
        chunk_bytes=DEFAULT_CHUNK_BYTES,
        vocab_sizes=criteo_tsv.VOCAB_SIZES,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f'criteo1tb: rank {rank} is not in [0, world_size={world_size})')
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(
                f'criteo1tb: global_batch_size {global_batch_size} is not a positive '
                f'multiple of world_size {world_size}'
            )
        self.files = split_files(split, data_dir)
        seed = 0 if data_rng is None else int(np.asarray(data_rng).reshape(-1)[0])
        self.split, self.seed = split, seed
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.rank, self.num_batches = rank, num_batches
        self.repeat_final_dataset = repeat_final_dataset
        self.skip_malformed, self.chunk_bytes = skip_malformed, chunk_bytes
        self.vocab_sizes = tuple(vocab_sizes)
        if not skip_malformed:
            for path in self.files:  # 64 KiB each: ~0.1 s for the ~900 train files.
                check_file_head(path, self.vocab_sizes)
        self.skipped_lines = 0
        self._batches = self._stream()

    def __next__(self) -> dict[str, torch.Tensor]:
        return next(self._batches)

    def file_order(self, pass_index: int) -> list[str]:
        """Files of pass ``pass_index``: shuffled for train/eval_train, else sorted."""
        if self.split not in ('train', 'eval_train'):
            return list(self.files)
        perm = np.random.default_rng([self.seed, pass_index]).permutation(len(self.files))
        return [self.files[i] for i in perm]

    def _stream(self) -> Iterator[dict[str, torch.Tensor]]:
        def taken():
            count, p = 0, 0
            while self.num_batches is None or count < self.num_batches:
                produced = 0
                for batch in self._one_pass(self.file_order(p)):
                    yield batch
                    produced += 1
                    count += 1
                    if count == self.num_batches:
                        return
                if produced == 0 and self.split == 'train':
                    raise ValueError(
                        f'criteo1tb: the train files hold fewer lines than one global batch '
                        f'of {self.global_batch_size}'
                    )
                if self.split != 'train':
                    return
                p += 1

        # A replay re-reads the files: the order depends only on (seed, pass), so the
        # batches repeat exactly, and nothing (eval_train: ~13 GB at bs 8192) is cached.
        while True:
            produced = 0
            for batch in taken():
                produced += 1
                yield batch
            if not self.repeat_final_dataset or produced == 0:
                return

    def _one_pass(self, files: list[str]) -> Iterator[dict[str, torch.Tensor]]:
        big, b = self.global_batch_size, self.local_batch_size
        lo = self.rank * b
        rows, seen, emitted = _Rows(), 0, 0  # seen: lines of this pass so far
        for path in files:
            for data, starts, ends, line_no in _line_chunks(path, self.chunk_bytes):
                pos = (seen + np.arange(len(ends), dtype=np.int64)) % big
                mine = np.flatnonzero((pos >= lo) & (pos < lo + b))
                if len(mine):
                    rows.push(self._parse(data, starts[mine], ends[mine], mine, path, line_no))
                seen += len(ends)
                while emitted < seen // big:  # every completed global batch
                    yield self._batch(rows.take(b))
                    emitted += 1
        if seen % big and self.split != 'train':  # upstream pads the last eval batch
            yield self._batch(rows.take(rows.count), pad_to=b)

    def _parse(self, data, starts, ends, line_idx, path, line_no):
        inputs, targets, errors = criteo_tsv.parse_criteo_tsv(data, starts, ends, self.vocab_sizes)
        weights = torch.ones(len(targets), dtype=torch.float32)
        if len(errors):
            if not self.skip_malformed:
                i, code, detail = (int(v) for v in errors[0])
                line = data[int(starts[i]) : int(ends[i])].numpy().tobytes()
                where = f'{path}:{line_no + int(line_idx[i])}'
                raise CriteoFormatError(f'{where}: {criteo_tsv.describe_error(line, code, detail)}')
            weights[errors[:, 0]] = 0.0
            self.skipped_lines += len(errors)
        return inputs, targets, weights

    def _batch(
        self, parts: list[torch.Tensor], pad_to: int | None = None
    ) -> dict[str, torch.Tensor]:
        inputs, targets, weights = (
            parts
            if parts
            else (torch.zeros(0, criteo_tsv.NUM_INPUTS), torch.zeros(0), torch.zeros(0))
        )
        if pad_to is not None and len(targets) < pad_to:
            pad = pad_to - len(targets)
            inputs = torch.cat([inputs, inputs.new_zeros(pad, criteo_tsv.NUM_INPUTS)])
            targets = torch.cat([targets, targets.new_zeros(pad)])
            weights = torch.cat([weights, weights.new_zeros(pad)])
        return {'inputs': inputs, 'targets': targets, 'weights': weights}


def get_criteo1tb_dataset(
    split: str,
    data_dir: str,
    data_rng,
    global_batch_size: int,
    num_batches: int | None = None,
    repeat_final_dataset: bool = False,
    rank: int = 0,
    world_size: int = 1,
    **options,
) -> CriteoDataset:
    """This rank's batches of ``split``: dicts of CPU float32 tensors.

    Args:
        split: 'train', 'eval_train', 'validation' or 'test'.
        data_dir: Directory holding ``day_<d>_<NN>``.
        data_rng: Upstream's RandomState (two uint32); element 0 seeds the file order.
        global_batch_size: Lines per global batch; a multiple of ``world_size``.
        num_batches: Stop after this many batches (None: train forever, eval one pass).
        repeat_final_dataset: Replay the ``num_batches`` batches forever.
        rank, world_size: This process's shard: rows ``[rank*b, (rank+1)*b)`` of each
            global batch, ``b = global_batch_size // world_size``.
        **options: ``skip_malformed`` (default False), ``chunk_bytes`` (64 MiB),
            ``vocab_sizes`` (upstream's).

    Returns:
        A ``CriteoDataset`` iterator; ``skipped_lines`` counts skipped malformed lines.

    Raises:
        FileNotFoundError: ``data_dir`` is missing or holds no file of the split.
        ValueError: Bad split, rank or batch size. ``CriteoFormatError`` (a ValueError)
            from ``next()`` on a malformed line unless ``skip_malformed``.
    """
    return CriteoDataset(
        split,
        data_dir,
        data_rng,
        global_batch_size,
        num_batches,
        repeat_final_dataset,
        rank,
        world_size,
        **options,
    )
