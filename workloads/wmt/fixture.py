"""A tiny de-en parallel corpus in the layout `algoperf data wmt` reads, for tests.

Writes ``<root>/{train,validation,test}.{de,en}``: UTF-8, one sentence per line, line i
of `.de` translated word by word into line i of `.en` from a small dictionary (umlauts
and ß included, so the tokenizer sees non-ASCII text). Sentence lengths vary from 1 to
`max_words` words; a few train pairs are far longer (`long_pairs`, past the reader's
256-token filter under a small vocabulary) and one train pair has an empty English side
(skipped by the converter, as TFDS skips it). With ``sgm=True`` the validation and test
files are written as WMT `.sgm` releases (``validation.de.sgm``, ...). Deterministic in
``seed``.
"""

from __future__ import annotations

import os

import numpy as np

WORDS = {
    'der': 'the', 'die': 'the', 'das': 'the', 'hund': 'dog', 'katze': 'cat',
    'haus': 'house', 'grün': 'green', 'groß': 'big', 'klein': 'small', 'läuft': 'runs',
    'schläft': 'sleeps', 'über': 'over', 'straße': 'street', 'heute': 'today',
    'morgen': 'tomorrow', 'und': 'and', 'nicht': 'not', 'sehr': 'very', 'schön': 'nice',
    'mädchen': 'girl', 'junge': 'boy', 'buch': 'book', 'liest': 'reads', 'wasser': 'water',
    'trinkt': 'drinks', 'im': 'in the', 'garten': 'garden', 'früh': 'early', 'spät': 'late',
}  # fmt: skip
SPLIT_PAIRS = {'train': 400, 'validation': 37, 'test': 41}


def sentence_pair(rng: np.random.Generator, n_words: int) -> tuple[str, str]:
    german = list(rng.choice(list(WORDS), size=n_words))
    english = [WORDS[w] for w in german]
    de, en = ' '.join(german), ' '.join(english)
    de, en = de[0].upper() + de[1:], en[0].upper() + en[1:]
    end = '.' if rng.random() < 0.8 else '?'
    return de + end, en + end


def corpus(seed: int, split: str, num_pairs: int, max_words: int, long_pairs: int):
    rng = np.random.default_rng([seed, sorted(SPLIT_PAIRS).index(split)])
    pairs = [sentence_pair(rng, int(rng.integers(1, max_words + 1))) for _ in range(num_pairs)]
    if split == 'train':
        for i in rng.choice(num_pairs, size=long_pairs, replace=False):
            pairs[i] = sentence_pair(rng, 400)
        pairs[3] = (pairs[3][0], '')  # An empty side: TFDS drops the pair.
    return pairs


def _write(path: str, lines: list[str], sgm: bool, lang: str) -> None:
    with open(path + ('.sgm' if sgm else ''), 'w', encoding='utf-8', newline='') as f:
        if sgm:
            f.write(
                f'<srcset setid="fixture" srclang="any"><doc docid="d1" sysid="ref" lang="{lang}">\n'
            )
            f.writelines(f'<seg id="{i + 1}">{line}</seg>\n' for i, line in enumerate(lines))
            f.write('</doc></srcset>\n')
        else:
            f.writelines(line + '\n' for line in lines)


def write_wmt_fixture(
    root: str,
    seed: int = 0,
    split_pairs: dict[str, int] | None = None,
    max_words: int = 30,
    long_pairs: int = 3,
    sgm: bool = False,
) -> dict[str, list[tuple[str, str]]]:
    """Writes the corpus under ``root`` (created if missing); returns {split: [(de, en)]}
    as written (the empty-sided train pair included).

    Args:
      root: The raw directory.
      seed: Seeds every sentence.
      split_pairs: Pairs per split (default `SPLIT_PAIRS`).
      max_words: Longest ordinary sentence, in words.
      long_pairs: Train pairs of 400 words.
      sgm: Validation and test as `.sgm` files.
    """
    os.makedirs(root, exist_ok=True)
    written = {}
    for split, n in (split_pairs or SPLIT_PAIRS).items():
        pairs = corpus(seed, split, n, max_words, long_pairs)
        for k, lang in enumerate(('de', 'en')):
            _write(
                os.path.join(root, f'{split}.{lang}'),
                [p[k] for p in pairs],
                sgm and split != 'train',
                lang,
            )
        written[split] = pairs
    return written
