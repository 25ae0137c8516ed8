"""`algoperf data librispeech`: the LibriSpeech release (FLAC) -> upstream's preprocessed layout.

Source: the OpenSLR LibriSpeech tarballs (https://www.openslr.org/12), extracted: a root
holding ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` and
``<speaker>-<chapter>.trans.txt`` (one ``<utt-id> <TRANSCRIPT>`` per line) for the six
subsets train-clean-100, train-clean-360, train-other-500, dev-clean, dev-other,
test-clean (``--raw_dir`` may name that root or its parent holding ``LibriSpeech/``).

Written, as upstream's `dataset/librispeech_tokenizer.py` and `librispeech_preprocess.py`
do (see `input_pipeline.LAYOUT`):
    * ``spm_model.vocab``: a SentencePiece unigram model (vocab 1024, character coverage
      1.0) trained on the train-clean-100 transcripts, one per line, up to 10^7
      characters; the file is the binary model, upstream's name kept.
    * per subset, each utterance with a transcript of at most 256 characters and audio of
      at most 320,000 samples: ``<subset>/<utt-id>_audio.npy`` (int64 PCM samples, as
      pydub returns them upstream) and ``<subset>/<utt-id>_targets.npy`` (int32 ids of
      the transcript plus EOS, as tf-text's tokenizer with ``add_eos=True``), and
      ``<subset>.csv`` (pandas index + column ``id``).
Differences: speakers, chapters and transcript lines are visited in sorted order
(upstream: `os.listdir` order, so its CSV order depended on the file system); a missing
or unreadable FLAC is an error naming the file (upstream skipped missing ones and then
failed its count check); transcripts whose tokens would exceed 256 are dropped too
(cannot happen at 256 characters except in degenerate tokenizers). The output appears
only when complete: written beside ``--data_dir`` and renamed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from algoperf.data_io import atomic_directory
from workloads.librispeech_conformer import input_pipeline as ip

TOKENIZER_SUBSETS = ('train-clean-100',)  # Upstream's `librispeech_tokenizer.run`.
TOKENIZER_MAX_CHARS = 10_000_000
# Upstream's expected counts (TFDS), before the length filters.
RELEASE_COUNTS = {
    'train-clean-100': 28_539,
    'train-clean-360': 104_014,
    'train-other-500': 148_688,
    'dev-clean': 2_703,
    'dev-other': 2_864,
    'test-clean': 2_620,
}


def find_root(raw_dir: str) -> str:
    """The directory holding the subset folders: `raw_dir` or its `LibriSpeech/`."""
    for candidate in (raw_dir, os.path.join(raw_dir, 'LibriSpeech')):
        if os.path.isdir(os.path.join(candidate, ip.SUBSETS[0])):
            return candidate
    raise FileNotFoundError(
        f'--raw_dir={raw_dir}: no {ip.SUBSETS[0]}/ here or in LibriSpeech/; expected the '
        f'extracted OpenSLR LibriSpeech tarballs ({", ".join(ip.SUBSETS)})'
    )


def read_transcripts(subset_dir: str) -> list[tuple[str, str, str]]:
    """(utt-id, transcript, flac path) of a subset, speakers/chapters/lines in sorted order."""
    if not os.path.isdir(subset_dir):
        raise FileNotFoundError(f'{subset_dir}: subset directory not found')
    out = []
    for speaker in sorted(os.listdir(subset_dir)):
        speaker_dir = os.path.join(subset_dir, speaker)
        if not os.path.isdir(speaker_dir):
            continue
        for chapter in sorted(os.listdir(speaker_dir)):
            chapter_dir = os.path.join(speaker_dir, chapter)
            trans = os.path.join(chapter_dir, f'{speaker}-{chapter}.trans.txt')
            if not os.path.isfile(trans):
                raise FileNotFoundError(f'{trans}: transcript file not found')
            with open(trans, encoding='utf-8') as f:
                for line_no, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    parts = line.split(' ', maxsplit=1)
                    if len(parts) != 2:
                        raise ValueError(f'{trans}:{line_no}: expected "<utt-id> <TRANSCRIPT>"')
                    utt, text = parts
                    out.append((utt, text, os.path.join(chapter_dir, f'{utt}.flac')))
    return out


def train_tokenizer(transcripts: list[str], model_path: str, vocab_size: int) -> None:
    """Upstream's `train_tokenizer`: unigram, character coverage 1.0, first 10^7 chars."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        chars = os.path.join(tmp, 'chars.txt')
        count = 0
        with open(chars, 'w', encoding='utf-8') as f:
            for text in transcripts:
                count += len(text) + 1
                if count > TOKENIZER_MAX_CHARS:
                    break
                f.write(text + '\n')
        prefix = os.path.join(tmp, 'spm')
        spm.SentencePieceTrainer.train(
            input=chars,
            vocab_size=vocab_size,
            character_coverage=1.0,
            model_prefix=prefix,
            model_type='unigram',
            minloglevel=2,
        )
        shutil.copyfile(prefix + '.model', model_path)


def load_flac(path: str) -> np.ndarray:
    """int64 samples of a mono 16-bit FLAC (upstream: pydub `get_array_of_samples`)."""
    import soundfile as sf

    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: audio file not found (listed in its transcript)')
    try:
        audio, _ = sf.read(path, dtype='int16', always_2d=True)
    except Exception as e:
        raise ValueError(f'{path}: unreadable FLAC ({type(e).__name__}: {e})') from e
    if audio.shape[1] != 1:
        raise ValueError(f'{path}: {audio.shape[1]} channels, expected mono')
    return audio[:, 0].astype(np.int64)


def convert_subset(root: str, out: str, subset: str, sp, workers: int, log=print) -> dict:
    """Writes `out/<subset>/` and `out/<subset>.csv`; returns counts."""
    import pandas as pd

    utterances = read_transcripts(os.path.join(root, subset))
    os.makedirs(os.path.join(out, subset))
    kept = [u for u in utterances if len(u[1]) <= ip.MAX_TRANSCRIPT_CHARS]
    skipped = {'transcript': len(utterances) - len(kept), 'audio': 0, 'tokens': 0}

    def process(item):
        utt, text, flac = item
        audio = load_flac(flac)
        if audio.shape[0] > ip.MAX_INPUT_LENGTH:
            return utt, 'audio'
        targets = np.asarray(sp.encode(text, add_eos=True), dtype=np.int32)
        if targets.shape[0] > ip.MAX_TARGET_LENGTH:
            return utt, 'tokens'
        np.save(os.path.join(out, subset, f'{utt}_audio.npy'), audio)
        np.save(os.path.join(out, subset, f'{utt}_targets.npy'), targets)
        return utt, None

    written = []
    t0 = last = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done, (utt, reason) in enumerate(pool.map(process, kept), 1):
            if reason is None:
                written.append(utt)
            else:
                skipped[reason] += 1
            now = time.perf_counter()
            if now - last > 5 or done == len(kept):
                last = now
                log(f'    {subset}: {done:,}/{len(kept):,} ({done / max(now - t0, 1e-9):.0f}/s)')
    pd.DataFrame(written, columns=['id']).to_csv(os.path.join(out, f'{subset}.csv'))
    return {'utterances': len(utterances), 'written': len(written), 'skipped': skipped}


def convert(
    raw_dir: str,
    data_dir: str,
    overwrite: bool = False,
    vocab_size: int = 1024,
    workers: int = 8,
    log=print,
) -> str:
    """Converts the release under `raw_dir` into `data_dir`; returns `data_dir`."""
    import sentencepiece as spm

    root = find_root(raw_dir)
    final = os.path.abspath(data_dir)
    if os.path.exists(final) and os.listdir(final) and not overwrite:
        raise FileExistsError(f'{final} exists and is not empty; pass --overwrite to replace it')
    for subset in ip.SUBSETS:  # Fail before any work when a subset is missing.
        if not os.path.isdir(os.path.join(root, subset)):
            raise FileNotFoundError(f'{os.path.join(root, subset)}: subset directory not found')
    with atomic_directory(final) as tmp:
        t0 = time.perf_counter()
        texts = [text for subset in TOKENIZER_SUBSETS
                 for _, text, _ in read_transcripts(os.path.join(root, subset))]  # fmt: skip
        model_path = os.path.join(tmp, ip.TOKENIZER_FILE)
        try:
            train_tokenizer(texts, model_path, vocab_size)
        except RuntimeError as e:
            raise ValueError(
                f'SentencePiece training on {", ".join(TOKENIZER_SUBSETS)} failed: {e}'
            ) from e
        log(
            f'  tokenizer: {ip.TOKENIZER_FILE}, vocab {vocab_size}, in {time.perf_counter() - t0:.1f} s'
        )
        sp = spm.SentencePieceProcessor(model_file=model_path)
        for i, subset in enumerate(ip.SUBSETS, 1):
            log(f'  [{i}/{len(ip.SUBSETS)}] {subset}')
            counts = convert_subset(root, tmp, subset, sp, workers, log)
            skipped = ', '.join(f'{v} {k}' for k, v in counts['skipped'].items() if v) or 'none'
            log(
                f'    wrote {counts["written"]:,} of {counts["utterances"]:,} (too long: {skipped})'
            )
            if counts['utterances'] != RELEASE_COUNTS[subset]:
                log(f'    note: the full release has {RELEASE_COUNTS[subset]:,} utterances here')
    log(f'Wrote {final}')
    return final


def main(argv: list[str], prog: str = 'algoperf data librispeech') -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Convert the LibriSpeech release (FLAC + transcripts) into upstream's "
        'preprocessed layout (and train its SentencePiece tokenizer).',
    )
    parser.add_argument(
        '--raw_dir', required=True, help='The extracted release (LibriSpeech/ or its parent).'
    )
    parser.add_argument('--data_dir', required=True, help='Output directory (new or empty).')
    parser.add_argument('--overwrite', action='store_true', help='Replace an existing output.')
    parser.add_argument(
        '--vocab_size',
        type=int,
        default=1024,
        help='Tokenizer vocabulary (upstream: 1024; tests: less).',
    )
    parser.add_argument(
        '--workers', type=int, default=min(8, os.cpu_count() or 1), help='Decoding threads.'
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    convert(
        args.raw_dir, args.data_dir, args.overwrite, args.vocab_size, args.workers,
        log=lambda msg: print(msg, file=sys.stderr),
    )  # fmt: skip
    print(
        f'Done in {time.perf_counter() - t0:.1f} s; use --data_dir={args.data_dir}', file=sys.stderr
    )
    return 0
