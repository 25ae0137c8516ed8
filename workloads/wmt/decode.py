"""Beam search and greedy decoding for the WMT Transformer.

Beam search is upstream's (`wmt_pytorch/decode.py`, a port of Flax's WMT example):
beam 4, brevity penalty ((5 + length) / 6)^alpha with alpha 0.6, the top 2·beam
candidates per step so that beams reaching EOS do not starve the live set, finished
sequences scored by log-probability / brevity penalty, the early stop when no live beam
can beat the worst finished one, live sequences returned for batch items with none
finished, beams sorted by increasing score (best last). Kept quirks: the chosen token is
written into every later position of its sequence (so finished sequences carry EOS to
the end), and sequences include the leading 0 start token.

The model side is two callables: `tokens_to_logits(flat_ids [N, 1], cache) -> (logits
[N, vocab], cache)` (N = batch·beam, beams of one item adjacent) and
`reorder_cache(cache, flat_indices [N]) -> cache`; the default reorder gathers every
tensor in the cache (dicts, lists and tuples of tensors) along dim 0. Decoding syncs
with the host once per step (the stop test), as upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

EOS_ID = 2  # SentencePiece's end of sentence.
NEG_INF = -1.0e7  # Upstream's "effective negative infinity".
BEAM_SIZE = 4
ALPHA = 0.6


def brevity_penalty(alpha: float, length: int) -> float:
    """((5 + length) / 6) ** alpha, the length normalisation of finished scores."""
    return ((5.0 + length) / 6.0) ** alpha


def gather_cache(cache: Any, flat_indices: Tensor) -> Any:
    """Rows `flat_indices` of every tensor in a (nested) dict/list/tuple; others unchanged."""
    if torch.is_tensor(cache):
        return cache.index_select(0, flat_indices) if cache.dim() >= 1 else cache
    if isinstance(cache, dict):
        return {k: gather_cache(v, flat_indices) for k, v in cache.items()}
    if isinstance(cache, (list, tuple)):
        return type(cache)(gather_cache(v, flat_indices) for v in cache)
    return cache


def _gather_beams(x: Tensor, beam_indices: Tensor) -> Tensor:
    """x [B, old_beams, ...] -> [B, new_beams, ...] picking `beam_indices` [B, new_beams]."""
    batch_indices = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[batch_indices, beam_indices]


def _topk_ascending(x: Tensor, k: int) -> Tensor:
    """Indices of the k largest entries along dim 1, worst first (upstream's flip)."""
    return torch.flip(torch.topk(x, k=k).indices, (1,))


def beam_search(
    batch_size: int,
    tokens_to_logits: Callable[[Tensor, Any], tuple[Tensor, Any]],
    cache: Any,
    beam_size: int = BEAM_SIZE,
    alpha: float = ALPHA,
    eos_id: int = EOS_ID,
    max_decode_len: int = 256,
    reorder_cache: Callable[[Any, Tensor], Any] = gather_cache,
    device: torch.device | str = 'cpu',
) -> tuple[Tensor, Tensor]:
    """Upstream's beam search.

    Args:
      batch_size: B; the cache holds B·beam_size rows (item-major).
      tokens_to_logits, cache, reorder_cache: the model (see the module docstring).
      beam_size, alpha, eos_id, max_decode_len: as upstream (sequences are
        max_decode_len long, position 0 the start token 0).

    Returns:
      ([B, beam, max_decode_len] int64 sequences, [B, beam] scores), best beam last.
    """
    k = beam_size
    arange_b = torch.arange(batch_size, device=device)[:, None]
    live_logprobs = torch.tensor([0.0] + [NEG_INF] * (k - 1), device=device).repeat(batch_size, 1)
    finished_scores = torch.full((batch_size, k), NEG_INF, device=device)
    live_seqs = torch.zeros((batch_size, k, max_decode_len), dtype=torch.long, device=device)
    finished_seqs = torch.zeros_like(live_seqs)
    finished_flags = torch.zeros((batch_size, k), dtype=torch.bool, device=device)
    min_brevity_penalty = brevity_penalty(alpha, max_decode_len)

    cur = 0
    while cur < max_decode_len - 1:
        # Stop when no live beam could still beat the worst finished one (all slots full).
        best_live = live_logprobs[:, -1:] / min_brevity_penalty
        worst_finished = finished_scores.min(dim=1, keepdim=True).values
        worst_finished = torch.where(finished_flags, worst_finished, NEG_INF)
        if bool((worst_finished > best_live).all()):
            break

        flat_ids = live_seqs[:, :, cur : cur + 1].reshape(batch_size * k, 1)
        flat_logits, cache = tokens_to_logits(flat_ids, cache)
        log_probs = F.log_softmax(flat_logits.view(batch_size, k, -1), dim=-1)
        log_probs = log_probs + live_logprobs.unsqueeze(2)
        vocab_size = log_probs.shape[2]

        # Top 2k candidates over all beams: even if k of them end, k stay live.
        topk_log_probs, topk_indices = torch.topk(log_probs.view(batch_size, -1), k=2 * k)
        topk_beam_indices = torch.div(topk_indices, vocab_size, rounding_mode='floor')
        topk_seq = _gather_beams(live_seqs, topk_beam_indices)
        topk_seq[:, :, cur + 1 :] = (topk_indices % vocab_size).unsqueeze(2)
        newly_finished = topk_seq[:, :, cur + 1] == eos_id

        # Live set: the best k that did not just end.
        new_log_probs = topk_log_probs + newly_finished * NEG_INF
        new_topk = _topk_ascending(new_log_probs, k)
        live_seqs = _gather_beams(topk_seq, new_topk)
        live_logprobs = _gather_beams(new_log_probs, new_topk)
        source_beams = _gather_beams(topk_beam_indices, new_topk)
        cache = reorder_cache(cache, (arange_b * k + source_beams).reshape(-1))

        # Finished set: the best k of the old finished and the newly ended.
        new_scores = topk_log_probs / brevity_penalty(alpha, cur + 1)
        new_scores = new_scores + (~newly_finished) * NEG_INF
        all_seqs = torch.cat([finished_seqs, topk_seq], dim=1)
        all_scores = torch.cat([finished_scores, new_scores], dim=1)
        all_flags = torch.cat([finished_flags, newly_finished], dim=1)
        top_finished = _topk_ascending(all_scores, k)
        finished_seqs = _gather_beams(all_seqs, top_finished)
        finished_scores = _gather_beams(all_scores, top_finished)
        finished_flags = _gather_beams(all_flags, top_finished)
        cur += 1

    # Items with no finished sequence return their live ones.
    any_finished = finished_flags.any(dim=1)
    seqs = torch.where(any_finished[:, None, None], finished_seqs, live_seqs)
    scores = torch.where(any_finished[:, None], finished_scores, live_logprobs)
    return seqs, scores


def greedy_search(
    batch_size: int,
    tokens_to_logits: Callable[[Tensor, Any], tuple[Tensor, Any]],
    cache: Any,
    eos_id: int = EOS_ID,
    max_decode_len: int = 256,
    device: torch.device | str = 'cpu',
) -> Tensor:
    """Argmax decoding: [B, max_decode_len] sequences laid out as beam search's (start
    token 0, EOS repeated to the end once emitted); stops when every item has ended."""
    seqs = torch.zeros((batch_size, max_decode_len), dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    for cur in range(max_decode_len - 1):
        logits, cache = tokens_to_logits(seqs[:, cur : cur + 1], cache)
        token = torch.where(done, eos_id, logits.argmax(dim=-1))
        seqs[:, cur + 1 :] = token[:, None]
        done = done | (token == eos_id)
        if bool(done.all()):
            break
    return seqs
