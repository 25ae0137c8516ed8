"""A tiny LibriSpeech release in OpenSLR's layout (what the tarballs extract to), for tests.

Layout as the real release: ``<root>/LibriSpeech/<subset>/<speaker>/<chapter>/
<speaker>-<chapter>-<utt:04d>.flac`` (16 kHz mono 16-bit FLAC) and
``<speaker>-<chapter>.trans.txt`` (``<utt-id> <TRANSCRIPT>`` lines, upper case) for the
six subsets the benchmark uses. Audio: tones plus noise (1.5-2.5 s: CTC-feasible for
the transcripts at 25 output frames per second). Transcripts: 1-4 words from a small
word list; train-clean-100's first utterance is a pangram, so that the tokenizer
(trained on that subset) covers every letter. Optionally one utterance per train-clean-100 over each preprocessing limit
(a 262-character transcript; 320,001 samples of audio) so that the
filters can be tested. Deterministic in ``seed``.
"""

from __future__ import annotations

import os

import numpy as np

SUBSETS = ('train-clean-100', 'train-clean-360', 'train-other-500', 'dev-clean', 'dev-other',
           'test-clean')  # fmt: skip
WORDS = ('THE', 'AND', 'OF', 'TO', 'A', 'IN', 'HE', 'WAS', 'THAT', 'HIS', 'IT', 'WITH', 'HAD',
         'FOR', 'AS', 'YOU', 'HER', 'NOT', 'SHE', 'BUT', 'AT', 'ON', 'BE', 'MY', 'HIM', 'SAID',
         'THEY', 'ALL', 'WHICH', 'THIS', 'HAVE', 'FROM', 'ONE', 'WERE', 'SO', 'WHEN', 'LITTLE',
         'BEFORE', 'LIBRARY', 'SPEECH', 'MORNING', 'QUESTION')  # fmt: skip
SAMPLE_RATE = 16_000
PANGRAM = 'THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG'


def _audio(rng: np.random.Generator, num_samples: int) -> np.ndarray:
    t = np.arange(num_samples) / SAMPLE_RATE
    tone = 4000 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
    return np.clip(tone + rng.normal(0, 300, num_samples), -32768, 32767).astype(np.int16)


def write_librispeech_fixture(
    root: str,
    seed: int = 0,
    utterances: dict[str, int] | None = None,
    chapters: int = 2,
    over_limit: bool = False,
) -> dict[str, list[tuple[str, str]]]:
    """Writes ``<root>/LibriSpeech/...``; returns {subset: [(utt-id, transcript)]} written.

    Args:
      root: Created if missing.
      seed: Seeds every value.
      utterances: per subset (default 12 for train-clean-100, 6 for the others); spread
        over `chapters` chapters of one speaker per subset.
      over_limit: add one too-long transcript and one too-long audio to train-clean-100
        (not in the returned lists' kept entries: they are returned under
        'train-clean-100/over_limit').
    """
    import soundfile as sf

    rng = np.random.default_rng(seed)
    counts = {s: 12 if s == 'train-clean-100' else 6 for s in SUBSETS}
    counts.update(utterances or {})
    written: dict[str, list[tuple[str, str]]] = {}
    for s_index, subset in enumerate(SUBSETS):
        speaker = str(100 + 10 * s_index)
        items = []
        extra = []
        if over_limit and subset == 'train-clean-100':
            extra = [
                (' '.join(['LIBRARY'] * 32) + ' SPEECH', 0.1),  # 262 characters.
                ('THE LONG ONE', None),  # 320,001 samples.
            ]
        for i in range(counts[subset] + len(extra)):
            chapter = str(1000 + i % chapters)
            utt = f'{speaker}-{chapter}-{i:04d}'
            if i == 0 and subset == 'train-clean-100':  # Every letter, for the tokenizer.
                text, num_samples = PANGRAM, int(3.5 * SAMPLE_RATE)
            elif i < counts[subset]:
                text = ' '.join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
                num_samples = int(rng.uniform(1.5, 2.5) * SAMPLE_RATE)
            else:
                text, seconds = extra[i - counts[subset]]
                num_samples = int(seconds * SAMPLE_RATE) if seconds else 320_001
            chapter_dir = os.path.join(root, 'LibriSpeech', subset, speaker, chapter)
            os.makedirs(chapter_dir, exist_ok=True)
            sf.write(
                os.path.join(chapter_dir, f'{utt}.flac'),
                _audio(rng, num_samples),
                SAMPLE_RATE,
                subtype='PCM_16',
                format='FLAC',
            )
            with open(os.path.join(chapter_dir, f'{speaker}-{chapter}.trans.txt'), 'a') as f:
                f.write(f'{utt} {text}\n')
            items.append((utt, text))
        written[subset] = items[: counts[subset]]
        if extra:
            written['train-clean-100/over_limit'] = items[counts[subset] :]
    return written
