"""`algoperf data finewebedu_lm`: FineWeb-Edu -> one flat uint16 GPT-2 token stream per split.

Two inputs (algoperf_v1.md §1.6):

* ``--hf_dir``: upstream's on-disk layout, HF `save_to_disk` folders ``train/`` and ``val/``
  with an ``input_ids`` column (Arrow IPC stream files ``data-*.arrow`` beside
  ``dataset_info.json``/``state.json``; read with pyarrow, `datasets` is not needed). Rows
  are copied in stored order (``state.json``'s file list, else the sorted ``data-*.arrow``),
  exactly as upstream's reader flattens them: nothing is appended. Upstream's tokenization
  already ends every document with EOS; the converter counts the rows that do and says so
  when some do not (pre-chunked rows, e.g. the early 2049-token version), which upstream
  also reads as is.
* ``--raw_dir`` + ``--tokenizer``: FineWeb-Edu shards (``*.parquet``, ``*.jsonl`` or
  ``*.jsonl.gz`` with a ``text`` column; the HF `sample/10BT` folder, 9.67 M documents)
  and the GPT-2 tokenizer as a local file: a `tokenizers` JSON (``tokenizer.json``) or a
  `tiktoken` BPE ranks file (``r50k_base.tiktoken``, GPT-2's ranks). Nothing is downloaded.
  Each document is tokenized as upstream's ``tokenizer(text)`` (the HF call, special
  tokens as the tokenizer file defines; GPT-2 adds none), then EOS is appended.
  ``<|endoftext|>`` written in a text becomes the EOS id, as in the HF tokenizer
  (tiktoken: ``allowed_special='all'``).

Raw split (which `dataset_setup.py` this follows): MLC @05dc4dd's
``train_test_split(test_size=0.1, seed=42)`` at the document level, reproduced exactly
(HF's algorithm: ``perm = np.random.default_rng(42).permutation(N)``, validation =
documents ``perm[:ceil(0.1 N)]``, train = ``perm[ceil(0.1 N):]``, each in that permuted
order), over the documents in shard-name then row order (what ``load_dataset`` yields).
Why this one: it is the only version that writes HF datasets, which the HF-based reader
(`input_pipeline.py@a6ce1da`) loads (CA @2cc9dff writes `tf.data.Dataset.save`, which it
cannot; its TF shuffle is not reproducible without TF); its 10% validation holds ~0.97 M
windows, enough for the 100,096 evaluated, and 90% of ~10 B tokens gives the spec's
8,749,870 train windows (@99b3fe1's 10 M-token validation holds only ~9,750 windows and it
packs for sequence length 2048). Its bugs are in the saving step (`.Save`, `val =
train_dataset`), not in the split, which is what is kept here.

Written (`input_pipeline.LAYOUT`): ``<data_dir>/finewebedu_gpt2/{train,validation}.bin``
(uint16 little-endian ids, no header) and ``format.json`` (format, version, vocabulary,
EOS id, the source, per split tokens, documents, windows, bytes and sha256). Every id is
checked to be < 50,257 (the model's embedding) and every input file before any output is
kept: the output is built beside its destination and renamed into place. The raw path
tokenizes in shard order into a scratch stream first, then writes the splits in permuted
order from it: expect ~2× the final size (2 × 20 GB) of free disk while it runs.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
import time

import numpy as np

from algoperf.data_io import atomic_directory
from workloads.finewebedu_lm import input_pipeline as ip
from workloads.finewebedu_lm.raw_text import (
    EOS_TOKEN,
    LocalTokenizer,
    count_documents,
    raw_shards,
    shard_texts,
    split_documents,
)

VAL_FRACTION = 0.1  # MLC @05dc4dd: train_test_split(test_size=0.1, seed=42).
SPLIT_SEED = 42
HF_SPLIT_DIRS = {'train': 'train', 'validation': 'val'}  # Upstream's folder names.
FLUSH_TOKENS = 1 << 22  # Tokens buffered per write (8 MiB).
PROGRESS_EVERY_S = 10.0
_SCRATCH = 'tokens-in-shard-order.bin'


class TokenWriter:
    """Appends uint16 ids to `path`, counting them and hashing the bytes as they go."""

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path, self.name = path, name or path
        self.tokens, self._sha = 0, hashlib.sha256()
        try:
            self._file = open(path, 'wb')
        except OSError as e:
            raise ValueError(f'{self.name}: cannot write ({e.strerror})') from e

    def write(self, ids: np.ndarray) -> None:
        data = np.ascontiguousarray(ids, dtype=ip.TOKEN_DTYPE).tobytes()
        try:
            self._file.write(data)
        except OSError as e:  # A full disk: one line; atomic_directory removes the rest.
            raise ValueError(f'{self.name}: write failed ({e.strerror})') from e
        self._sha.update(data)
        self.tokens += len(ids)

    def close(self) -> dict:
        self._file.close()
        return {
            'tokens': self.tokens,
            'bytes': os.path.getsize(self.path),
            'sha256': self._sha.hexdigest(),
        }


class Progress:
    """'documents, tokens, documents/s' lines at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, label: str, log, total: int | None = None) -> None:
        self.label, self.log, self.total = label, log, total
        self.docs = self.tokens = 0
        self.t0 = self._last = time.perf_counter()
        self._last_line = None

    def add(self, docs: int, tokens: int, final: bool = False) -> None:
        self.docs += docs
        self.tokens += tokens
        now = time.perf_counter()
        if (final and self._last_line != (self.docs, self.tokens)) or (
            now - self._last >= PROGRESS_EVERY_S
        ):
            self._last, self._last_line = now, (self.docs, self.tokens)
            rate = self.docs / max(now - self.t0, 1e-9)
            of = f'/{self.total:,}' if self.total else ''
            self.log(
                f'  {self.label}: {self.docs:,}{of} documents, {self.tokens:,} tokens, '
                f'{rate:,.0f} documents/s, {now - self.t0:.0f} s'
            )


def check_ids(ids: np.ndarray, lengths: np.ndarray, where: str) -> None:
    """ValueError naming the row of the first id outside 0..VOCAB_SIZE - 1."""
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= ip.VOCAB_SIZE):
        at = int(np.flatnonzero((ids < 0) | (ids >= ip.VOCAB_SIZE))[0])
        row = int(np.searchsorted(np.cumsum(lengths), at, side='right'))
        raise ValueError(
            f'{where}: row {row}: token id {int(ids[at])} is outside 0..{ip.VOCAB_SIZE - 1} '
            f'(the GPT-2 vocabulary of {ip.VOCAB_SIZE:,})'
        )


def check_writable(data_dir: str) -> None:
    """ValueError unless `data_dir` can be created and written (before any long work)."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        probe = os.path.join(data_dir, f'.write-probe-{os.getpid()}')
        with open(probe, 'wb'):
            pass
        os.remove(probe)
    except OSError as e:
        raise ValueError(f'--data_dir={data_dir}: not writable ({e.strerror or e})') from e


# ---- upstream's HF save_to_disk layout ---------------------------------------------------------
def hf_files(split_dir: str) -> list[str]:
    """The split's Arrow files in stored order: state.json's `_data_files`, else sorted."""
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"{split_dir}: not found; --hf_dir must hold upstream's save_to_disk folders "
            'train/ and val/'
        )
    state = os.path.join(split_dir, 'state.json')
    if os.path.isfile(state):
        try:
            with open(state) as f:
                names = [d['filename'] for d in json.load(f)['_data_files']]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f'{state}: not a save_to_disk state.json ({e})') from e
        files = [os.path.join(split_dir, n) for n in names]
    else:
        files = sorted(glob.glob(os.path.join(glob.escape(split_dir), 'data-*.arrow')))
    if not files:
        raise FileNotFoundError(f'{split_dir}: no data-*.arrow files (HF save_to_disk layout)')
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path}: not found (listed in {state})')
    return files


def arrow_batches(path: str):
    """The record batches of an Arrow IPC stream (save_to_disk's format) or file."""
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        try:
            batches = iter(pa.ipc.open_stream(source))
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        while (batch := next(batches, None)) is not None:
            yield batch
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f'{path}: not a readable Arrow IPC file ({e})') from e


def input_ids_of(batch, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids as int64, per-row lengths) of a batch's `input_ids` list column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    if 'input_ids' not in names:
        raise ValueError(f'{path}: no input_ids column (columns: {", ".join(names) or "none"})')
    col = batch.column(names.index('input_ids'))
    kind = col.type
    is_list = (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    )
    if not is_list or not pa.types.is_integer(kind.value_type):
        raise ValueError(f'{path}: column input_ids is {kind}, not a list of integer token ids')
    flat = col.flatten()
    if col.null_count or flat.null_count:
        raise ValueError(f'{path}: column input_ids has null values')
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    return flat.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), lengths


def convert_hf_split(split_dir: str, writer: TokenWriter, eos_id: int, log) -> dict:
    progress = Progress(os.path.basename(split_dir.rstrip('/')) + '/', log)
    rows = ending_with_eos = 0
    for path in hf_files(split_dir):
        rows_in_file = 0
        for batch in arrow_batches(path):
            ids, lengths = input_ids_of(batch, path)
            check_ids(ids, lengths, f'{path} (batch at row {rows_in_file})')
            last = np.cumsum(lengths)[lengths > 0] - 1
            ending_with_eos += int((ids[last] == eos_id).sum())
            writer.write(ids)
            rows_in_file += len(lengths)
            progress.add(len(lengths), len(ids))
        if rows_in_file == 0:
            raise ValueError(f'{path}: no rows (an empty shard)')
        rows += rows_in_file
    progress.add(0, 0, final=True)
    if ending_with_eos < rows:
        log(
            f'  note: {rows - ending_with_eos:,} of {rows:,} rows in {split_dir} do not end with '
            f'EOS {eos_id} (pre-chunked rows?); stored as is, as upstream reads them'
        )
    return {'documents': rows, 'rows_ending_with_eos': ending_with_eos}


def tokenize_shards(shards, counts, tokenizer, writer, log) -> np.ndarray:
    """Tokenizes every document in shard order into `writer`; returns per-document lengths."""
    lengths = np.empty(sum(counts), dtype=np.int64)
    progress = Progress('tokenized', log, total=len(lengths))
    done = 0
    for path, count in zip(shards, counts):
        start = done
        for texts in shard_texts(path):
            if done + len(texts) > len(lengths):
                raise ValueError(f'{path}: changed while being read (more documents than counted)')
            ids, doc_lengths = tokenizer.encode_with_eos(texts)
            check_ids(
                ids, doc_lengths, f'{path} (tokenized by {tokenizer.path}, document {done - start})'
            )
            writer.write(ids)
            lengths[done : done + len(texts)] = doc_lengths
            done += len(texts)
            progress.add(len(texts), len(ids))
        if done - start != count:
            raise ValueError(f'{path}: {done - start} documents read, {count} counted')
    progress.add(0, 0, final=True)
    return lengths


def write_split(scratch: np.ndarray, offsets: np.ndarray, docs: np.ndarray, writer, label, log):
    """Writes documents `docs` (in that order) from the shard-order scratch stream."""
    progress = Progress(label, log, total=len(docs))
    buffer, buffered = [], 0
    for c in range(0, len(docs), 1 << 16):
        chunk = docs[c : c + (1 << 16)]
        for s, e in zip(offsets[chunk].tolist(), offsets[chunk + 1].tolist()):
            buffer.append(scratch[s:e])
            buffered += e - s
            if buffered >= FLUSH_TOKENS:
                writer.write(np.concatenate(buffer))
                buffer, buffered = [], 0
        progress.add(len(chunk), int((offsets[chunk + 1] - offsets[chunk]).sum()))
    if buffer:
        writer.write(np.concatenate(buffer))
    progress.add(0, 0, final=True)


# ---- driver ------------------------------------------------------------------------------------
def _finish_split(entry: dict, name: str, source: str, log) -> dict:
    entry = {'file': ip.SPLIT_FILES[name], **entry, 'windows': entry['tokens'] // ip.WINDOW}
    if entry['windows'] < 1:
        raise ValueError(
            f'{source}: its {name} split has {entry["tokens"]:,} tokens, fewer than one '
            f'{ip.WINDOW}-token window'
        )
    log(
        f'  wrote {name}: {entry["documents"]:,} documents, {entry["tokens"]:,} tokens, '
        f'{entry["windows"]:,} windows'
    )
    if name == 'validation' and entry['windows'] < ip.NUM_VALIDATION_EXAMPLES:
        log(
            f'  note: validation holds {entry["windows"]:,} windows; evals read all of them '
            f'(upstream evaluates 100,096)'
        )
    return entry


def convert(
    data_dir: str,
    hf_dir: str | None = None,
    raw_dir: str | None = None,
    tokenizer: str | None = None,
    eos_token: str = EOS_TOKEN,
    eos_id: int = ip.EOS_ID,
    val_fraction: float = VAL_FRACTION,
    split_seed: int = SPLIT_SEED,
    overwrite: bool = False,
    log=print,
) -> str:
    """Converts `hf_dir` (upstream's layout) or `raw_dir` + `tokenizer`; returns the
    written `<data_dir>/finewebedu_gpt2`."""
    if (hf_dir is None) == (raw_dir is None):
        raise ValueError('give exactly one of --hf_dir and --raw_dir')
    final = os.path.join(data_dir, ip.DATASET_DIR)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f'{final} exists; pass --overwrite to replace it')
    # Every input is checked before the long work starts.
    if raw_dir is not None:
        if tokenizer is None:
            raise ValueError(
                '--raw_dir needs --tokenizer (a local tokenizer.json or tiktoken ranks file)'
            )
        shards = raw_shards(raw_dir)
        tok = LocalTokenizer(tokenizer, eos_token)
        counts = [count_documents(path) for path in shards]
        order = split_documents(sum(counts), val_fraction, split_seed)
        log(
            f'{len(shards)} shards, {sum(counts):,} documents; tokenizer {tokenizer} '
            f'({tok.kind}, {tok.vocab_size:,} ids, EOS {tok.eos_id}); validation '
            f'{len(order["validation"]):,} documents (train_test_split test_size={val_fraction:g}, '
            f'seed={split_seed})'
        )
        eos_id = tok.eos_id
    else:
        if not os.path.isdir(hf_dir):
            raise NotADirectoryError(f'--hf_dir={hf_dir}: not a directory')
        if not 0 <= eos_id < ip.VOCAB_SIZE:
            raise ValueError(f'--eos_id={eos_id}: outside 0..{ip.VOCAB_SIZE - 1}')
        for sub in HF_SPLIT_DIRS.values():
            hf_files(os.path.join(hf_dir, sub))
    check_writable(data_dir)
    with atomic_directory(final) as tmp:
        splits = {}
        if raw_dir is not None:
            scratch_path = os.path.join(tmp, _SCRATCH)
            scratch = TokenWriter(scratch_path)
            lengths = tokenize_shards(shards, counts, tok, scratch, log)
            scratch.close()
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            stream = np.memmap(scratch_path, dtype=ip.TOKEN_DTYPE, mode='r').view(np.ndarray)
            for name in ('validation', 'train'):
                writer = TokenWriter(
                    os.path.join(tmp, ip.SPLIT_FILES[name]),
                    os.path.join(final, ip.SPLIT_FILES[name]),
                )
                write_split(stream, offsets, order[name], writer, f'writing {name}', log)
                entry = {**writer.close(), 'documents': len(order[name])}
                entry['rows_ending_with_eos'] = entry['documents']
                splits[name] = _finish_split(entry, name, raw_dir, log)
            del stream
            os.remove(scratch_path)
            source = {
                'layout': 'raw_text', 'path': os.path.abspath(raw_dir),
                'shards': [os.path.basename(p) for p in shards],
                'tokenizer': os.path.abspath(tokenizer), 'tokenizer_kind': tok.kind,
                'tokenizer_sha256': tok.sha256, 'tokenizer_vocab_size': tok.vocab_size,
                'eos_appended': True,
                'split': {'method': 'HF train_test_split (MLC dataset_setup @05dc4dd)',
                          'val_fraction': val_fraction, 'seed': split_seed},
            }  # fmt: skip
        else:
            for name, sub in HF_SPLIT_DIRS.items():
                writer = TokenWriter(
                    os.path.join(tmp, ip.SPLIT_FILES[name]),
                    os.path.join(final, ip.SPLIT_FILES[name]),
                )
                counts_of = convert_hf_split(os.path.join(hf_dir, sub), writer, eos_id, log)
                splits[name] = _finish_split({**writer.close(), **counts_of}, name, hf_dir, log)
            source = {
                'layout': 'hf_save_to_disk',
                'path': os.path.abspath(hf_dir),
                'eos_appended': False,
            }
        meta = {
            'format': ip.FORMAT_NAME,
            'version': ip.FORMAT_VERSION,
            'dtype': 'uint16',
            'vocab_size': ip.VOCAB_SIZE,
            'eos_id': eos_id,
            'window': ip.WINDOW,
            'source': source,
            'splits': splits,
        }
        with open(os.path.join(tmp, 'format.json'), 'w') as f:
            json.dump(meta, f, indent=2)
    log(f'Wrote {final}')
    return final


def main(argv: list[str], prog: str = 'algoperf data finewebedu_lm') -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            'Convert FineWeb-Edu for the finewebedu_lm workload into flat uint16 GPT-2 token '
            "streams: either upstream's HF save_to_disk folders (--hf_dir with train/ and val/) "
            'or raw parquet/jsonl shards with a text column (--raw_dir) plus a local GPT-2 '
            'tokenizer file (--tokenizer).'
        ),
        epilog='Layouts, the split and the checks: workloads/finewebedu_lm/convert.py.',
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        '--hf_dir', help='Holds train/ and val/ (datasets save_to_disk, input_ids).'
    )
    source.add_argument(
        '--raw_dir', help='Holds *.parquet / *.jsonl(.gz) shards with a text column.'
    )
    parser.add_argument('--data_dir', required=True, help=f'Writes <data_dir>/{ip.DATASET_DIR}/.')
    parser.add_argument(
        '--tokenizer',
        help='With --raw_dir: a local tokenizer.json (tokenizers) or tiktoken ranks file.',
    )
    parser.add_argument('--eos_token', default=EOS_TOKEN, help='With --raw_dir: the EOS token.')
    parser.add_argument(
        '--eos_id',
        type=int,
        default=ip.EOS_ID,
        help='With --hf_dir: the EOS id rows end with (counted only).',
    )
    parser.add_argument(
        '--val_fraction',
        type=float,
        default=VAL_FRACTION,
        help='With --raw_dir: documents held out (upstream 0.1).',
    )
    parser.add_argument(
        '--split_seed',
        type=int,
        default=SPLIT_SEED,
        help="With --raw_dir: the split's seed (upstream 42).",
    )
    parser.add_argument('--overwrite', action='store_true', help='Replace an existing conversion.')
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error('--val_fraction must be in (0, 1)')
    if args.hf_dir is not None and args.tokenizer is not None:
        parser.error('--tokenizer goes with --raw_dir (--hf_dir holds token ids already)')
    t0 = time.perf_counter()
    convert(
        args.data_dir, args.hf_dir, args.raw_dir, args.tokenizer, args.eos_token, args.eos_id,
        args.val_fraction, args.split_seed, args.overwrite,
    )  # fmt: skip
    print(
        f'Done in {time.perf_counter() - t0:.1f} s; use --data_dir={args.data_dir}', file=sys.stderr
    )
    return 0
