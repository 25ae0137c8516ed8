"""Corpus BLEU as upstream AlgoPerf computes it (its `wmt/bleu.py`, a port of sacreBLEU 1.3.1).

Upstream's defaults, which are sacreBLEU's: 13a tokenization (sacreBLEU's own
`Tokenizer13a` here; the same regexes as upstream's copy), no lowercasing, lines
right-stripped, 4-gram precisions with 'exp' smoothing, brevity penalty from the
closest reference length, 100-based score. Under DDP the sufficient statistics
(system/reference lengths, matched and total n-grams) are summed over ranks before the
score is formed, as upstream does; `corpus_bleu` takes that sum as `reduce_fn`.

One difference from sacreBLEU 2.x, kept on purpose: a corpus with no matching unigram
scores from the smoothed precisions (a small positive number, as sacreBLEU 1.3.1 and
upstream) instead of sacreBLEU 2.x's early 0.0. Otherwise the score equals
`sacrebleu.corpus_bleu` (tested).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

NGRAM_ORDER = 4
_tokenize_13a = Tokenizer13a()


class BLEU(NamedTuple):
    score: float
    counts: list[int]
    totals: list[int]
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int


def _ngrams(tokens: list[str]) -> Counter:
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, NGRAM_ORDER + 1)
        for i in range(len(tokens) - n + 1)
    )


def corpus_stats(sys_stream: Sequence[str], ref_streams: Sequence[Sequence[str]]) -> list[int]:
    """Sufficient statistics [sys_len, ref_len, correct_1..4, total_1..4] of a corpus.

    Args:
      sys_stream: hypotheses, one string per segment.
      ref_streams: one or more reference streams, each as long as `sys_stream`.
    """
    if isinstance(sys_stream, str):
        sys_stream = [sys_stream]
    if any(len(refs) != len(sys_stream) for refs in ref_streams):
        raise EOFError('Source and reference streams have different lengths!')
    sys_len = ref_len = 0
    correct = [0] * NGRAM_ORDER
    total = [0] * NGRAM_ORDER
    for hyp, *refs in zip(sys_stream, *ref_streams):
        hyp_tokens = _tokenize_13a(hyp.rstrip()).split()
        ref_ngrams: Counter = Counter()
        closest_diff = closest_len = None
        for ref in refs:
            ref_tokens = _tokenize_13a(ref.rstrip()).split()
            diff = abs(len(hyp_tokens) - len(ref_tokens))
            if closest_diff is None or diff < closest_diff:
                closest_diff, closest_len = diff, len(ref_tokens)
            elif diff == closest_diff:
                closest_len = min(closest_len, len(ref_tokens))
            ref_ngrams |= _ngrams(ref_tokens)  # Max count over references.
        sys_len += len(hyp_tokens)
        ref_len += closest_len
        for ngram, count in _ngrams(hyp_tokens).items():
            correct[len(ngram) - 1] += min(count, ref_ngrams[ngram])
            total[len(ngram) - 1] += count
    return [sys_len, ref_len, *correct, *total]


def _log(x: float) -> float:
    return -9999999999 if x == 0.0 else math.log(x)


def compute_bleu(stats: Sequence[int]) -> BLEU:
    """Score of summed `corpus_stats` (upstream's `compute_bleu`, 'exp' smoothing)."""
    sys_len, ref_len = int(stats[0]), int(stats[1])
    correct = [int(c) for c in stats[2 : 2 + NGRAM_ORDER]]
    total = [int(t) for t in stats[2 + NGRAM_ORDER : 2 + 2 * NGRAM_ORDER]]
    precisions = [0.0] * NGRAM_ORDER
    smooth_mteval = 1.0
    for n in range(NGRAM_ORDER):
        if total[n] == 0:
            break
        if correct[n] == 0:
            smooth_mteval *= 2
            precisions[n] = 100.0 / (smooth_mteval * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    score = bp * math.exp(sum(map(_log, precisions)) / NGRAM_ORDER)
    return BLEU(score, correct, total, precisions, bp, sys_len, ref_len)


def corpus_bleu(
    sys_stream: Sequence[str],
    ref_streams: Sequence[Sequence[str]],
    reduce_fn: Callable[[list[int]], Sequence[int]] | None = None,
) -> BLEU:
    """Upstream's `corpus_bleu(sys_stream, [refs]).score` path; `reduce_fn` sums the
    statistics over ranks (identity when None)."""
    stats = corpus_stats(sys_stream, ref_streams)
    if reduce_fn is not None:
        stats = reduce_fn(stats)
    return compute_bleu(stats)
