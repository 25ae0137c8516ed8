"""`algoperf data wmt`: parallel de-en text -> SentencePiece model + the reader's `.npy` arrays.

Input (`--raw_dir`), plain UTF-8 text, one sentence per line, line i of `.de` translated
by line i of `.en`::

    train.de       train.en        WMT17 de-en training data (5,906,184 pairs in TFDS)
    validation.de  validation.en   newstest2013 (WMT14 de-en validation, 3,000 pairs)
    test.de        test.en         newstest2014 (WMT14 de-en test, 3,003 pairs)

Each file may instead be the WMT `.sgm` release of it (`test.de.sgm`, ...), read as TFDS
reads them: the text of every line starting `<seg id="N">`, as is (no entity unescaping).
As in TFDS, text files are split at '\n' only, nothing is stripped, and a pair with an
empty side is skipped.

How to produce them from the public releases (what TFDS `wmt17_translate/de-en` and
`wmt14_translate/de-en`, upstream's data, are built from):

* train: concatenate, in this order, the de-en pairs of the four WMT17 training corpora
  TFDS uses: Europarl v7 (`training/europarl-v7.de-en.{de,en}` in
  http://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz), Common Crawl
  (`commoncrawl.de-en.{de,en}` in http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz),
  News Commentary v12 (`training/news-commentary-v12.de-en.{de,en}` in
  http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz) and Rapid 2016
  (`rapid2016.de-en.{de,en}` in http://data.statmt.org/wmt17/translation-task/rapid2016.tgz)::

      cat europarl-v7.de-en.de commoncrawl.de-en.de news-commentary-v12.de-en.de rapid2016.de-en.de > train.de
      cat europarl-v7.de-en.en commoncrawl.de-en.en news-commentary-v12.de-en.en rapid2016.de-en.en > train.en

  (About 5.92M lines; TFDS keeps 5,906,184 pairs after dropping those with an empty side,
  as the converter does. Pair order does not matter: the reader shuffles and the
  tokenizer samples.) Conversion holds the text in memory: expect ~5 GB of RAM and
  some minutes for the tokenization.
* validation / test, with sacrebleu (a dependency)::

      sacrebleu -t wmt13 -l de-en --echo src > validation.de
      sacrebleu -t wmt13 -l de-en --echo ref > validation.en
      sacrebleu -t wmt14/full -l de-en --echo src > test.de
      sacrebleu -t wmt14/full -l de-en --echo ref > test.en

  newstest2013 is sacrebleu's `wmt13` (3,000 pairs). newstest2014 must be `wmt14/full`
  (3,003 pairs, TFDS's test split); sacrebleu's plain `wmt14` is the filtered 2,737-pair
  version. Equivalently, the `.sgm` files of http://www.statmt.org/wmt13/test.tgz
  (`test/newstest2013-src.{de,en}.sgm`) and http://www.statmt.org/wmt14/test-full.tgz
  (`test-full/newstest2014-deen-{src.de,ref.en}.sgm`), renamed to `{validation,test}.{de,en}.sgm`.

Written (`input_pipeline.LAYOUT`): `<data_dir>/wmt_sentencepiece_model`, a SentencePiece
unigram model trained as upstream's `tokenizer.py` does (vocabulary 32,000, character
coverage 1.0, the trainer's default ids: unk 0, bos 1, eos 2, no pad) on about 1e7
characters of training text (whole pairs, each side counted with its newline); and
`<data_dir>/wmt_de_en/`: per split, the token ids of every sentence with EOS appended (as
tf-text's tokenizer with add_eos) concatenated into `{inputs,targets}_tokens.npy` (uint16)
with `{inputs,targets}_offsets.npy`, plus `format.json`. `--spm_model` skips training and
uses a given model instead (e.g. upstream's `wmt_sentencepiece_model`).

Deviation: upstream trains SentencePiece on the first ~1e7 characters of TFDS's stored
train order (itself a hash shuffle); here on whole pairs taken in a seeded random order
(`--seed`) until 1e7 characters, so the sample spans all four corpora likewise.

Everything is checked (files present, line counts of each `.de`/`.en` pair equal) before
anything is written; the output is written beside its destination and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

from algoperf.data_io import atomic_directory
from workloads.wmt import input_pipeline as ip

LANGS = ('de', 'en')  # inputs, targets.
VOCAB_SIZE = 32_000
MAX_CORPUS_CHARS = 10**7
_SEG = re.compile(r'<seg id="\d+">(.*)</seg>')  # TFDS's `_parse_sgm`.
_CHUNK = 100_000  # Lines encoded per SentencePiece call.


def find_file(raw_dir: str, split: str, lang: str) -> str:
    for name in (f'{split}.{lang}', f'{split}.{lang}.sgm'):
        path = os.path.join(raw_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f'{os.path.join(raw_dir, f"{split}.{lang}")}: not found (nor .sgm); --raw_dir must hold '
        '{train,validation,test}.{de,en}, one sentence per line (see `algoperf data wmt --help`)'
    )


def read_lines(path: str) -> list[str]:
    """The sentences of a text file (split at '\n' only, nothing stripped, as TFDS's
    `_parse_text`) or of a `.sgm` file (TFDS's `_parse_sgm`: lines starting
    `<seg id="N">`, their text as is)."""
    try:
        with open(path, encoding='utf-8', newline='') as f:
            lines = f.read().split('\n')
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text ({e})') from e
    if path.endswith('.sgm'):
        return [m.group(1) for m in map(_SEG.match, lines) if m]
    if lines and lines[-1] == '':
        lines.pop()  # The final newline.
    return lines


def read_raw(raw_dir: str, log=print) -> dict[str, dict[str, list[str]]]:
    """{split: {lang: sentences}}; every pair of files is checked to have equal line counts."""
    if not os.path.isdir(raw_dir):
        raise NotADirectoryError(f'--raw_dir={raw_dir}: not a directory')
    paths = {s: {lang: find_file(raw_dir, s, lang) for lang in LANGS} for s in ip.SPLITS}
    corpus = {}
    for split, files in paths.items():
        t0 = time.perf_counter()
        corpus[split] = {lang: read_lines(path) for lang, path in files.items()}
        n_de, n_en = (len(corpus[split][lang]) for lang in LANGS)
        if n_de != n_en:
            raise ValueError(
                f'{files["en"]}: {n_en:,} lines but {files["de"]} has {n_de:,}; the files of a '
                'split must be line-aligned translations'
            )
        # TFDS skips a pair with an empty side (`if not all(ex.values())`).
        de, en = corpus[split]['de'], corpus[split]['en']
        keep = [i for i in range(n_de) if de[i] and en[i]]
        if len(keep) < n_de:
            corpus[split] = {'de': [de[i] for i in keep], 'en': [en[i] for i in keep]}
        if not keep:
            raise ValueError(f'{files["de"]}: no sentence pairs')
        log(
            f'  read {split}: {len(keep):,} pairs ({n_de - len(keep):,} with an empty side '
            f'skipped) in {time.perf_counter() - t0:.1f} s'
        )
    return corpus


def training_sample(train: dict[str, list[str]], max_chars: int, seed: int) -> list[str]:
    """Whole pairs in a seeded random order until `max_chars` (upstream's count: the UTF-8
    bytes of each side plus its newline) is reached; de and en lines interleaved."""
    order = np.random.default_rng(seed).permutation(len(train['de']))
    lines, count = [], 0
    for i in order.tolist():
        if count >= max_chars:
            break
        for lang in LANGS:
            line = train[lang][i]
            lines.append(line)
            count += len(line.encode('utf-8')) + 1
    return lines


def train_sentencepiece(lines: list[str], model_path: str, vocab_size: int) -> None:
    """Upstream's `_train_sentencepiece` arguments (the rest are the trainer's defaults);
    the trainer's log is silenced."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, 'chars.txt')
        with open(text, 'w', encoding='utf-8') as f:
            f.writelines(line + '\n' for line in lines)
        try:
            spm.SentencePieceTrainer.train(
                input=text,
                model_prefix=os.path.join(tmp, 'spm'),
                vocab_size=vocab_size,
                character_coverage=1.0,
                model_type='unigram',
                minloglevel=2,  # Errors only.
            )
        except RuntimeError as e:
            raise ValueError(f'SentencePiece training failed: {e}') from e
        shutil.copyfile(os.path.join(tmp, 'spm.model'), model_path)


def encode(sp, sentences: list[str], path: str, log=print) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 tokens with EOS after each sentence, int64 offsets)."""
    if sp.get_piece_size() > np.iinfo(np.uint16).max + 1:
        raise ValueError(f'vocabulary of {sp.get_piece_size()} does not fit uint16')
    eos = sp.eos_id()
    if eos < 0:
        raise ValueError('the SentencePiece model has no EOS id (upstream appends EOS)')
    pieces, lengths = [], []
    t0 = time.perf_counter()
    for c in range(0, len(sentences), _CHUNK):
        for ids in sp.encode(sentences[c : c + _CHUNK], num_threads=os.cpu_count() or 1):
            ids.append(eos)
            pieces.append(np.asarray(ids, dtype=np.uint16))
            lengths.append(len(ids))
        if len(sentences) > _CHUNK:
            done = min(c + _CHUNK, len(sentences))
            log(
                f'    {path}: {done:,}/{len(sentences):,} sentences, {time.perf_counter() - t0:.0f} s'
            )
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return np.concatenate(pieces) if pieces else np.zeros(0, np.uint16), offsets


def convert(
    raw_dir: str,
    data_dir: str,
    overwrite: bool = False,
    vocab_size: int = VOCAB_SIZE,
    max_corpus_chars: int = MAX_CORPUS_CHARS,
    spm_model: str | None = None,
    seed: int = 0,
    log=print,
) -> str:
    """Converts the parallel text in `raw_dir`; returns the written `<data_dir>/wmt_de_en`."""
    import sentencepiece as spm

    final = os.path.join(data_dir, ip.DATASET_DIR)
    final_vocab = os.path.join(data_dir, ip.VOCAB_FILE)
    if not overwrite:
        for path in (final, final_vocab):
            if os.path.exists(path):
                raise FileExistsError(f'{path} exists; pass --overwrite to replace it')
    if spm_model is not None and not os.path.isfile(spm_model):
        raise FileNotFoundError(f'--spm_model={spm_model}: not found')
    log(f'Reading parallel text in {raw_dir}')
    corpus = read_raw(raw_dir, log)
    with atomic_directory(final) as tmp:
        vocab = os.path.join(tmp, ip.VOCAB_FILE)
        if spm_model is None:
            t0 = time.perf_counter()
            sample = training_sample(corpus['train'], max_corpus_chars, seed)
            log(
                f'  training SentencePiece (unigram, vocab {vocab_size:,}) on {len(sample):,} lines'
            )
            train_sentencepiece(sample, vocab, vocab_size)
            log(f'  trained in {time.perf_counter() - t0:.1f} s')
        else:
            shutil.copyfile(spm_model, vocab)
        sp = spm.SentencePieceProcessor(model_file=vocab)
        counts = {}
        for split in ip.SPLITS:
            out = os.path.join(tmp, split)
            os.makedirs(out)
            for key, lang in zip(ip.KEYS, LANGS):
                tokens, offsets = encode(sp, corpus[split][lang], f'{split}.{lang}', log)
                np.save(os.path.join(out, f'{key}_tokens.npy'), tokens)
                np.save(os.path.join(out, f'{key}_offsets.npy'), offsets)
            counts[split] = len(corpus[split]['de'])
            log(f'  wrote {split}: {counts[split]:,} pairs')
        meta = {
            'format': ip.FORMAT_NAME,
            'version': ip.FORMAT_VERSION,
            'source': os.path.abspath(raw_dir),
            'pairs': counts,
            'vocab_size': sp.get_piece_size(),
            'ids': {'unk': sp.unk_id(), 'bos': sp.bos_id(), 'eos': sp.eos_id(), 'pad': sp.pad_id()},
            'vocab_sha256': ip.file_sha256(vocab),
        }
        with open(os.path.join(tmp, 'format.json'), 'w') as f:
            json.dump(meta, f, indent=2)
        # The model first: the arrays' format.json names its checksum, so a reader never
        # pairs new arrays with an old model.
        os.replace(vocab, final_vocab)
    log(f'Wrote {final_vocab} and {final}')
    return final


def main(argv: list[str], prog: str = 'algoperf data wmt') -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            'Tokenize WMT de-en parallel text (<raw_dir>/{train,validation,test}.{de,en}) for the '
            'wmt workloads: trains the SentencePiece model and writes the token arrays.'
        ),
        epilog='File layout and how to build it from the WMT releases: workloads/wmt/convert.py.',
    )
    parser.add_argument('--raw_dir', required=True, help='Holds {train,validation,test}.{de,en}.')
    parser.add_argument(
        '--data_dir',
        required=True,
        help=f'Writes <data_dir>/{ip.VOCAB_FILE} and <data_dir>/{ip.DATASET_DIR}/.',
    )
    parser.add_argument('--overwrite', action='store_true', help='Replace an existing conversion.')
    parser.add_argument(
        '--vocab_size',
        type=int,
        default=VOCAB_SIZE,
        help='SentencePiece vocabulary (upstream: 32000).',
    )
    parser.add_argument(
        '--max_corpus_chars',
        type=int,
        default=MAX_CORPUS_CHARS,
        help='Tokenizer training text (upstream: 1e7).',
    )
    parser.add_argument('--spm_model', help='Use this SentencePiece model instead of training one.')
    parser.add_argument('--seed', type=int, default=0, help='Seeds the tokenizer training sample.')
    args = parser.parse_args(argv)
    if not 0 < args.vocab_size <= VOCAB_SIZE:
        parser.error(f'--vocab_size must be in 1..{VOCAB_SIZE} (the model embeds {VOCAB_SIZE} ids)')
    t0 = time.perf_counter()
    convert(
        args.raw_dir,
        args.data_dir,
        args.overwrite,
        args.vocab_size,
        args.max_corpus_chars,
        args.spm_model,
        args.seed,
    )
    print(
        f'Done in {time.perf_counter() - t0:.1f} s; use --data_dir={args.data_dir}', file=sys.stderr
    )
    return 0
