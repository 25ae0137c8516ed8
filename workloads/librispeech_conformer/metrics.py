"""CTC loss, greedy CTC decoding and word error rate (upstream AlgoPerf v0.6 semantics).

Upstream: `librispeech_pytorch/workload.py` (`loss_fn`, `greedy_decode`) and
`librispeech_conformer/metrics.py` (`edit_distance`, `compute_wer`). Kept: the CTC
loss is `nn.CTCLoss(blank=0, reduction='none')` on log-softmax outputs with lengths
from the paddings; `n_valid_examples` is at least 1 and counts, as upstream's
`mask_batch = target_lengths` makes it, target tokens when no mask is given (training
batches, upstream's eval) and examples with weight and a non-empty target under a mask;
decoding takes the per-frame argmax, treats padded frames as blank, merges
repeats and drops blanks; WER is the word edit distance summed over utterances
divided by the summed reference word counts (an empty reference counts one word,
as upstream's `len(''.split(' '))`).

Differences: `greedy_decode` is written with a cumulative-sum compaction instead of
upstream's `unique_consecutive` plus boolean indexing, so it has static shapes and no
host sync (same output); `n_valid_examples` is clamped on the device (upstream's
Python `max(tensor, 1)` syncs). Detokenisation is a function argument (the
SentencePiece tokenizer is not wired in yet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BLANK_ID = 0


def ctc_loss(
    targets: Tensor,
    target_paddings: Tensor,
    logits: Tensor,
    logit_paddings: Tensor,
    mask_batch: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-example CTC loss as upstream's `loss_fn` (no regularisation, not synced).

    Args:
      targets: [B, L] token ids (any dtype; padded with anything).
      target_paddings: [B, L], 1.0 on padding.
      logits: [B, T, vocab].
      logit_paddings: [B, T], 1.0 on padding.
      mask_batch: optional [B] weights of the examples.

    Returns:
      {'summed', 'n_valid_examples' (float, >= 1, on the logits' device), 'per_example' [B]};
      n_valid_examples is upstream's: with `mask_batch`, the examples with weight and a
      non-empty target; without, the number of target tokens.
    """
    logprobs = torch.log_softmax(logits, dim=-1)
    input_lengths = (1 - logit_paddings).sum(dim=1).long()
    target_lengths = (1 - target_paddings).sum(dim=1).long().to(logits.device)
    per_example = F.ctc_loss(
        logprobs.transpose(0, 1),
        targets.to(logits.device).long(),
        input_lengths,
        target_lengths,
        blank=BLANK_ID,
        reduction='none',
    )
    if mask_batch is not None:
        mask_batch = mask_batch.to(logits.device)
        per_example = per_example * mask_batch
        valid = torch.logical_and(mask_batch, target_lengths)  # Examples with a target.
    else:
        # Upstream: `mask_batch = target_lengths`, so without a mask (every training batch
        # and upstream's eval) n_valid counts target tokens and summed / n_valid is per token.
        valid = target_lengths
    n_valid = valid.sum().to(per_example.dtype).clamp(min=1)
    return {'summed': per_example.sum(), 'n_valid_examples': n_valid, 'per_example': per_example}


def greedy_decode(logits: Tensor, logit_paddings: Tensor) -> tuple[Tensor, Tensor]:
    """Best-path CTC decoding: ([B, T] tokens left-aligned then 0s, [B, T] paddings).

    Per frame the argmax token (padded frames count as blank); a token is emitted where
    it differs from the previous frame's token and is not blank. Paddings are 1 where
    the output is 0, as upstream.
    """
    tokens = logits.argmax(dim=-1) * (1 - logit_paddings).long()
    previous = F.pad(tokens[:, :-1], (1, 0), value=-1)
    emit = (tokens != previous) & (tokens != BLANK_ID)
    # Emitted token i of a row goes to column i; the rest go to a spare last column.
    position = torch.cumsum(emit.long(), dim=1) - 1
    t = tokens.shape[1]
    position = torch.where(emit, position, t)
    out = tokens.new_zeros(tokens.shape[0], t + 1)
    out.scatter_(1, position, torch.where(emit, tokens, 0))
    out = out[:, :t]
    return out, (out == BLANK_ID).to(logits.dtype)


def edit_distance(source: str, target: str) -> int:
    """Word-level Levenshtein distance between whitespace-separated strings."""
    src, tgt = source.split(), target.split()
    previous = list(range(len(tgt) + 1))
    for i, word in enumerate(src, start=1):
        current = [i] + [0] * len(tgt)
        for j, other in enumerate(tgt, start=1):
            if word == other:
                current[j] = previous[j - 1]
            else:
                current[j] = 1 + min(current[j - 1], previous[j], previous[j - 1])
        previous = current
    return previous[-1]


def batch_edit_distances(sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """`edit_distance` of every (source, target) pair at once: int64 [B].

    The Levenshtein row update `cur[j] = min(prev[j] + 1, prev[j-1] + cost, cur[j-1] + 1)`
    is vectorised over j: with `t[j] = min(prev[j] + 1, prev[j-1] + cost)` (and `t[0] = i`),
    `cur[j] = min_{k<=j}(t[k] + j - k) = cummin(t - j) + j`. Rows run over the longest
    source, each a few numpy ops on [B, longest target + 1]; words become integer ids, and
    padding gets ids that never match (sources -1, targets -2). Upstream runs the per-pair
    Python DP (`edit_distance`), seconds per eval batch (bench_eval_decode.py).
    """
    vocab: dict[str, int] = {}
    src = [[vocab.setdefault(w, len(vocab)) for w in s.split()] for s in sources]
    tgt = [[vocab.setdefault(w, len(vocab)) for w in t.split()] for t in targets]
    b = len(src)
    ls = np.array([len(x) for x in src], dtype=np.int64)
    lt = np.array([len(x) for x in tgt], dtype=np.int64)
    ms, mt = int(ls.max(initial=0)), int(lt.max(initial=0))
    s_ids = np.full((b, ms), -1, dtype=np.int64)
    t_ids = np.full((b, mt), -2, dtype=np.int64)
    for k, (x, y) in enumerate(zip(src, tgt)):
        s_ids[k, : len(x)], t_ids[k, : len(y)] = x, y
    cols = np.arange(mt + 1, dtype=np.int64)
    prev = np.broadcast_to(cols, (b, mt + 1)).copy()
    result = prev[np.arange(b), lt].copy()  # Sources of length 0.
    for i in range(1, ms + 1):
        cost = (s_ids[:, i - 1 : i] != t_ids).astype(np.int64)
        t = np.empty_like(prev)
        t[:, 0] = i
        t[:, 1:] = np.minimum(prev[:, 1:] + 1, prev[:, :-1] + cost)
        prev = np.minimum.accumulate(t - cols, axis=1) + cols
        done = ls == i
        result[done] = prev[done, lt[done]]
    return result


def token_ids_to_text(ids: Sequence[int]) -> str:
    """Placeholder detokeniser: each token id is one 'word' (a token error rate)."""
    return ' '.join(str(int(i)) for i in ids)


def compute_wer(
    decoded: np.ndarray,
    decoded_paddings: np.ndarray,
    targets: np.ndarray,
    target_paddings: np.ndarray,
    detokenize: Callable[[np.ndarray], str] = token_ids_to_text,
) -> tuple[float, float]:
    """(word errors, reference words) summed over a batch, as upstream's `compute_wer`.

    Args:
      decoded, decoded_paddings: [B, T] greedy-decoded ids and their paddings.
      targets, target_paddings: [B, L] reference ids and paddings.
      detokenize: int32 ids -> text (upstream: SentencePiece `detokenize`).
    """
    decoded_lengths = np.sum(decoded_paddings == 0.0, axis=-1)
    target_lengths = np.sum(target_paddings == 0.0, axis=-1)
    hypotheses, references = [], []
    for i in range(targets.shape[0]):
        hypotheses.append(str(detokenize(decoded[i][: decoded_lengths[i]].astype(np.int32))))
        reference = str(detokenize(targets[i][: target_lengths[i]].astype(np.int32)))
        references.append(' '.join(reference.split()))
    # `len(r.split(' '))`, as upstream: an empty reference counts one word.
    num_words = float(sum(len(r.split(' ')) for r in references))
    return float(batch_edit_distances(hypotheses, references).sum()), num_words
