"""Raw FineWeb-Edu text shards and a local GPT-2 tokenizer, for `algoperf data finewebedu_lm`.

Shards: ``*.parquet`` (a string ``text`` column; FineWeb-Edu's other columns are ignored),
``*.jsonl`` or ``*.jsonl.gz`` (one JSON object with a string ``"text"`` per line; blank
lines skipped), read in sorted file-name order, rows in file order. The tokenizer is a
local file, never a download: a `tokenizers` JSON (``tokenizer.json``) or a `tiktoken`
BPE ranks file (``<base64 token> <rank>`` per line; GPT-2's split pattern; EOS = the id
after the last rank, as GPT-2's 50256). Both packages are optional imports: a one-line
error says which to install. Every error names the file (and line or row).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import itertools
import json
import math
import os

import numpy as np

from workloads.finewebedu_lm import input_pipeline as ip

EOS_TOKEN = '<|endoftext|>'
RAW_PATTERNS = ('*.parquet', '*.jsonl', '*.jsonl.gz')
ENCODE_BATCH = 4096  # Documents per tokenizer call (it parallelises within a call).


def raw_shards(raw_dir: str) -> list[str]:
    if not os.path.isdir(raw_dir):
        raise NotADirectoryError(f'--raw_dir={raw_dir}: not a directory')
    found = sorted(
        {p for pat in RAW_PATTERNS for p in glob.glob(os.path.join(glob.escape(raw_dir), pat))}
    )
    if not found:
        raise FileNotFoundError(
            f'--raw_dir={raw_dir}: no {", ".join(RAW_PATTERNS)} shards (FineWeb-Edu text)'
        )
    return found


def _open_text(path: str):
    return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def count_documents(path: str) -> int:
    """Documents in a shard (parquet: its metadata; jsonl: its non-blank lines), > 0."""
    if path.endswith('.parquet'):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f'{path}: not a parquet file ({e})') from e
        schema = pf.schema_arrow
        if 'text' not in schema.names:
            raise ValueError(f'{path}: no text column (columns: {", ".join(schema.names)})')
        kind = schema.field('text').type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f'{path}: column text is {kind}, not a string')
        count = pf.metadata.num_rows
    else:
        try:
            with _open_text(path) as f:
                count = sum(1 for line in f if line.strip())
        except (OSError, EOFError) as e:
            raise ValueError(f'{path}: unreadable ({e})') from e
    if count == 0:
        raise ValueError(f'{path}: no documents (an empty shard)')
    return count


def shard_texts(path: str):
    """Lists of up to ENCODE_BATCH document texts, in file order."""
    if path.endswith('.parquet'):
        import pyarrow as pa
        import pyarrow.parquet as pq

        row = 0
        batches = pq.ParquetFile(path).iter_batches(batch_size=ENCODE_BATCH, columns=['text'])
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:
                raise ValueError(f'{path}: unreadable after row {row} ({e})') from e
            if batch is None:
                return
            texts = batch.column(0).to_pylist()
            if None in texts:
                raise ValueError(f'{path}: row {row + texts.index(None)}: text is null')
            row += len(texts)
            yield texts
    texts = []
    with _open_text(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode('utf-8'))
            except UnicodeDecodeError as e:
                raise ValueError(
                    f'{path}: line {number}: not UTF-8 ({e.reason} at byte {e.start})'
                ) from e
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}: line {number}: not JSON ({e.msg})') from e
            text = record.get('text') if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise ValueError(f'{path}: line {number}: no string "text" field')
            texts.append(text)
            if len(texts) == ENCODE_BATCH:
                yield texts
                texts = []
    if texts:
        yield texts


class LocalTokenizer:
    """A GPT-2-style tokenizer from a local file: `tokenizers` JSON or `tiktoken` ranks.

    Attributes: path, kind ('tokenizers' | 'tiktoken'), eos_id, vocab_size, sha256.
    """

    def __init__(self, path: str, eos_token: str = EOS_TOKEN) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'--tokenizer={path}: not found')
        self.path = path
        with open(path, 'rb') as f:
            data = f.read()
        self.sha256 = hashlib.sha256(data).hexdigest()
        if data.lstrip()[:1] == b'{':
            self._load_tokenizers(path, eos_token)
        else:
            self._load_tiktoken(path, data, eos_token)
        if self.vocab_size > ip.VOCAB_SIZE:
            raise ValueError(
                f'{path}: a vocabulary of {self.vocab_size:,} ids; '
                f'the model embeds {ip.VOCAB_SIZE:,}'
            )

    def _load_tokenizers(self, path: str, eos_token: str) -> None:
        try:
            import tokenizers
        except ImportError:
            raise ValueError(
                f'--tokenizer={path}: reading a tokenizer.json needs `pip install tokenizers`'
            ) from None
        try:
            tok = tokenizers.Tokenizer.from_file(path)
        except Exception as e:  # noqa: BLE001 (the Rust loader raises plain Exception)
            raise ValueError(f'{path}: not a `tokenizers` JSON file ({e})') from e
        eos = tok.token_to_id(eos_token)
        if eos is None:
            raise ValueError(f"{path}: no {eos_token!r} token (GPT-2's EOS)")
        self.kind, self.eos_id = 'tokenizers', int(eos)
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        # add_special_tokens=True is the HF `tokenizer(text)` default; GPT-2's adds nothing.
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets: same ids.
        encode = getattr(tok, 'encode_batch_fast', tok.encode_batch)
        self._encode = lambda texts: [e.ids for e in encode(texts, add_special_tokens=True)]

    def _load_tiktoken(self, path: str, data: bytes, eos_token: str) -> None:
        import base64
        import binascii

        try:
            import tiktoken
            from tiktoken_ext.openai_public import r50k_pat_str  # GPT-2's split pattern.
        except ImportError:
            raise ValueError(
                f'--tokenizer={path}: reading a tiktoken ranks file needs `pip install tiktoken`'
            ) from None
        ranks = {}
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except (ValueError, binascii.Error):
                raise ValueError(
                    f'{path}: line {number}: not "<base64 token> <rank>" (neither a tiktoken '
                    'ranks file nor a tokenizer.json)'
                ) from None
        if not ranks:
            raise ValueError(f'{path}: no BPE ranks')
        eos = max(ranks.values()) + 1  # GPT-2: ranks 0..50255, <|endoftext|> = 50256.
        try:
            enc = tiktoken.Encoding(
                name=os.path.basename(path), pat_str=r50k_pat_str, mergeable_ranks=ranks,
                special_tokens={eos_token: eos},
            )  # fmt: skip
        except ValueError as e:
            raise ValueError(f'{path}: not usable as BPE ranks ({e})') from e
        self.kind, self.eos_id, self.vocab_size = 'tiktoken', eos, eos + 1
        threads = os.cpu_count() or 1
        self._encode = lambda texts: enc.encode_batch(
            texts, num_threads=threads, allowed_special='all'
        )

    def encode_with_eos(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(flat int64 ids, per-document lengths) of `texts`, EOS after each document."""
        encoded = self._encode(texts)
        body = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        lengths = body + 1
        flat = np.empty(int(lengths.sum()), dtype=np.int64)
        eos_at = np.cumsum(lengths) - 1
        is_text = np.ones(len(flat), dtype=bool)
        is_text[eos_at] = False
        flat[is_text] = np.fromiter(
            itertools.chain.from_iterable(encoded), np.int64, int(body.sum())
        )
        flat[eos_at] = self.eos_id
        return flat, lengths


def split_documents(num_documents: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """HF `Dataset.train_test_split(test_size=val_fraction, seed=seed)`: document indices
    of each split, in the order the split stores them."""
    n_val = math.ceil(val_fraction * num_documents)
    if not 0 < n_val < num_documents:
        raise ValueError(
            f'{num_documents} documents cannot be split {1 - val_fraction:g}/{val_fraction:g} '
            'into two non-empty splits'
        )
    perm = np.random.default_rng(seed).permutation(num_documents)
    return {'validation': perm[:n_val], 'train': perm[n_val:]}
