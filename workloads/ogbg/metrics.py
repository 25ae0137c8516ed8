"""ogbg-molpcba loss and eval metrics, as upstream AlgoPerf v0.6 computes them.

Upstream: `ogbg_pytorch/workload.py` (`_binary_cross_entropy_with_mask`) and
`ogbg/metrics.py` (a clu `Collection`: `accuracy` and `loss` are masked averages over
valid (graph, task) labels, `mean_average_precision` collects every batch and computes
OGB's per-task average precision on the host). Here the sums and counts stay on the
device and average precision is computed in numpy (no clu, flax or sklearn), with
sklearn's definition: AP = sum_k (R_k - R_{k-1}) P_k over the distinct scores, ties
counted together.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def sigmoid_cross_entropy_with_mask(
    labels: Tensor, logits: Tensor, mask: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """[B, T] elementwise sigmoid BCE, 0 where `mask` is 0 (upstream's formula).

    Invalid labels are first set to -1 (upstream does this so NaNs cannot reach the
    gradient), then smoothed as `(1 - ls) * y + ls / T`; the loss is TF's stable
    `max(x, 0) - x * y + log(1 + exp(-|x|))` (log1p here: equal up to rounding).

    Args:
      labels: [B, T] targets in {0, 1} (any value where masked).
      logits: [B, T].
      mask: [B, T] bool or float weights; nonzero marks a valid label.
      label_smoothing: ls above.
    """
    if not logits.shape == labels.shape == mask.shape:
        raise ValueError(
            f'Shape mismatch between logits ({logits.shape}), targets '
            f'({labels.shape}), and weights ({mask.shape}).'
        )
    if logits.dim() != 2:
        raise ValueError(f'Rank of logits ({logits.shape}) must be 2.')
    valid = mask.to(torch.bool)
    labels = torch.where(valid, labels, -1)
    num_classes = labels.shape[-1]
    smoothed = (1.0 - label_smoothing) * labels + label_smoothing / num_classes
    losses = torch.clamp_min(logits, 0) - logits * smoothed + torch.log1p(torch.exp(-logits.abs()))
    return torch.where(valid, losses, 0.0)


def batch_sums(labels: Tensor, logits: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Device scalars for one eval batch: matches, losses and the count of valid labels.

    `accuracy` is clu's masked Average of `(logits > 0) == labels`, `loss` the masked
    Average of the unsmoothed per-label loss: both are sum / count over valid labels.
    """
    valid = mask.to(torch.bool)
    matches = ((logits > 0) == (labels > 0.5)) & valid
    losses = sigmoid_cross_entropy_with_mask(labels, logits, mask)
    return {
        'accuracy': matches.sum(dtype=torch.float64),
        'loss': losses.sum(dtype=torch.float64),
        'count': valid.sum(dtype=torch.float64),
    }


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's `average_precision_score` for one binary task (1-d arrays).

    Returns 0.0 without positives, as sklearn 1.x does (with a warning there).
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind='mergesort')
    scores, labels = scores[order], labels[order]
    # Last index of each run of equal scores: one threshold per distinct score.
    ends = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]
    tps = np.cumsum(labels)[ends]
    fps = ends + 1 - tps
    if labels.size == 0 or tps[-1] == 0:
        return 0.0
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(labels: np.ndarray, logits: np.ndarray, mask: np.ndarray) -> float:
    """OGB's molpcba metric as upstream computes it: the nan-mean of per-task AP.

    Upstream's eligibility test counts 0s and 1s over *all* rows of a task, masked ones
    included (masked labels are 0 in real batches: NaN labels and padding graphs), and
    then scores only the valid rows. Kept as is: with padding in every batch it admits
    tasks whose valid labels are all positive (AP 1.0).

    Args:
      labels: [N, T] in {0, 1}.
      logits: [N, T].
      mask: [N, T]; nonzero marks a valid label.

    Returns:
      The mean over eligible tasks, NaN when there are none.
    """
    labels = np.asarray(labels)
    mask = np.asarray(mask).astype(bool)
    # float32 as upstream (its DDP path's formula): saturated probabilities tie.
    logits = np.asarray(logits, dtype=np.float32)
    probs = 1.0 / (1.0 + np.exp(-logits))
    aps = np.full(labels.shape[1], np.nan)
    for task in range(labels.shape[1]):
        column = labels[:, task]
        if np.sum(column == 0) > 0 and np.sum(column == 1) > 0:
            valid = mask[:, task]
            aps[task] = average_precision(column[valid], probs[valid, task])
    if np.isnan(aps).all():
        return float('nan')
    return float(np.nanmean(aps))
