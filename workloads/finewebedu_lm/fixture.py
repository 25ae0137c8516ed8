"""A tiny FineWeb-Edu look-alike in both layouts `algoperf data finewebedu_lm` reads, for tests.

* `documents`: deterministic English-like texts (a few non-ASCII words, one empty
  document, a few documents longer than a 1025-token window so that windows both cross
  document boundaries and lie inside one document).
* `train_tokenizer`: a byte-level BPE trained here with the `tokenizers` package (no
  download), saved as a `tokenizer.json`. Its vocabulary is small (default 384 + EOS) and
  `<|endoftext|>` is added after training, so EOS is its last id, as in GPT-2 — whose real
  tokenizer has 50,257 ids with EOS 50,256; the converter accepts any vocabulary up to
  50,257 and reads the EOS id from the file.
* `write_tiktoken_ranks`: a tiktoken BPE ranks file (the 256 bytes, then every prefix of
  the most frequent words, so each word can be merged up), EOS = the next id.
* `write_raw_shards`: the texts as FineWeb-Edu-style parquet or jsonl shards (a `text`
  column plus metadata columns the converter ignores).
* `write_hf_layout`: token rows as HF `save_to_disk` folders (`data-*.arrow` Arrow IPC
  streams with an `input_ids` list<int32> column, `dataset_info.json`, `state.json`).
"""

from __future__ import annotations

import base64
import collections
import json
import os

import numpy as np

EOS_TOKEN = '<|endoftext|>'
WORDS = (
    'the of and to in is that for it as was with be by on not he this are or his from at '
    'which but have an they you were her she there been one all we their has would when if '
    'so no will more about learning students school energy water history science data '
    'teacher cells plants children reading education research climate health system '
    'naïve café über façade résumé 数据 école'
).split()


def documents(seed: int = 0, num_documents: int = 240, long_documents: int = 3) -> list[str]:
    """Texts of 0..120 words (document 1 empty), `long_documents` of 1,500 words."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1)  # Zipf-like, as real text.
    weights /= weights.sum()
    texts = []
    for i in range(num_documents):
        n = 1500 if i in range(5, 5 + long_documents) else int(rng.integers(1, 121))
        words = rng.choice(WORDS, size=n, p=weights).tolist()
        sentences, start = [], 0
        while start < len(words):  # Sentences of 4..15 words, capitalised, full stop.
            stop = start + int(rng.integers(4, 16))
            sentence = ' '.join(words[start:stop])
            sentences.append(sentence[0].upper() + sentence[1:] + '.')
            start = stop
        texts.append(' '.join(sentences))
    texts[1] = ''  # Upstream keeps an empty document as a lone EOS.
    return texts


def train_tokenizer(texts: list[str], path: str, vocab_size: int = 384) -> str:
    """A byte-level BPE trained on `texts`, EOS added last; saved to `path` (tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's.
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([EOS_TOKEN])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tok.save(path)
    return path


def write_tiktoken_ranks(texts: list[str], path: str, num_words: int = 40) -> str:
    """A tiktoken ranks file: 256 single bytes, then every prefix of the `num_words` most
    frequent ' word' strings (shortest first, so BPE can merge up to the whole word)."""
    counts = collections.Counter(' ' + w for t in texts for w in t.split())
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    for word, _ in counts.most_common(num_words):
        data = word.encode('utf-8')
        for end in range(2, len(data) + 1):
            ranks.setdefault(data[:end], len(ranks))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'wb') as f:
        for token, rank in ranks.items():
            f.write(base64.b64encode(token) + b' ' + str(rank).encode() + b'\n')
    return path


def write_raw_shards(
    texts: list[str], root: str, fmt: str = 'parquet', num_shards: int = 2
) -> list[str]:
    """The texts split into `num_shards` consecutive shards under `root` (names sort in
    document order); FineWeb-Edu's metadata columns beside `text`. Returns the paths."""
    os.makedirs(root, exist_ok=True)
    bounds = np.linspace(0, len(texts), num_shards + 1).astype(int)
    paths = []
    for s in range(num_shards):
        rows = range(bounds[s], bounds[s + 1])
        ext = {'parquet': 'parquet', 'jsonl': 'jsonl'}[fmt]
        path = os.path.join(root, f'{s:03d}_00000.{ext}')
        meta = {'id': [f'<urn:uuid:{i:08d}>' for i in rows], 'score': [3.0 + i % 2 for i in rows]}
        if fmt == 'parquet':
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({'text': [texts[i] for i in rows], **meta})
            pq.write_table(table, path, row_group_size=50)
        else:
            with open(path, 'w', encoding='utf-8') as f:
                for j, i in enumerate(rows):
                    record = {'text': texts[i], 'id': meta['id'][j], 'score': meta['score'][j]}
                    f.write(json.dumps(record, ensure_ascii=False) + '\n')
        paths.append(path)
    return paths


def write_arrow_rows(
    path: str, rows: list[list[int]], column: str = 'input_ids', value_type=None
) -> None:
    """One `data-*.arrow` file: an Arrow IPC stream, record batches of up to 64 rows."""
    import pyarrow as pa

    value_type = value_type or pa.int32()
    schema = pa.schema([pa.field(column, pa.list_(value_type))])
    with pa.OSFile(path, 'wb') as sink, pa.ipc.new_stream(sink, schema) as writer:
        for start in range(0, max(len(rows), 1), 64):
            chunk = rows[start : start + 64]
            if chunk or not rows:
                writer.write_batch(
                    pa.record_batch([pa.array(chunk, pa.list_(value_type))], schema=schema)
                )


def write_hf_layout(
    split_rows: dict[str, list[list[int]]], root: str, files_per_split: int = 2
) -> str:
    """`root/{train,val}/` as `Dataset.save_to_disk` writes them (rows split over
    `files_per_split` Arrow files, listed in state.json). Returns root."""
    for split, rows in split_rows.items():
        out = os.path.join(root, split)
        os.makedirs(out, exist_ok=True)
        bounds = np.linspace(0, len(rows), files_per_split + 1).astype(int)
        names = [f'data-{i:05d}-of-{files_per_split:05d}.arrow' for i in range(files_per_split)]
        for i, name in enumerate(names):
            write_arrow_rows(os.path.join(out, name), rows[bounds[i] : bounds[i + 1]])
        info = {
            'citation': '', 'description': '', 'homepage': '', 'license': '',
            'features': {
                'input_ids': {'feature': {'dtype': 'int32', '_type': 'Value'}, '_type': 'Sequence'}
            },
        }  # fmt: skip
        state = {
            '_data_files': [{'filename': n} for n in names],
            '_fingerprint': f'fixture-{split}',
            '_format_columns': None, '_format_kwargs': {}, '_format_type': None,
            '_output_all_columns': False, '_split': None,
        }  # fmt: skip
        with open(os.path.join(out, 'dataset_info.json'), 'w') as f:
            json.dump(info, f, indent=2)
        with open(os.path.join(out, 'state.json'), 'w') as f:
            json.dump(state, f, indent=2)
    return root
