"""SpecAugment time and frequency masking (upstream AlgoPerf v0.6 `SpecAug`).

Faithful to `librispeech_pytorch/spectrum_augmenter.py` (a port of init2winit's
`spectrum_augmenter.py`, arXiv:1904.08779): the same sampling of mask sizes and
starts (including its bias towards over-masking short sequences), the same order of
draws from torch's RNG on the input's device (time masks, then frequency masks: per
mask family one [B, count] uniform for the sizes, then one for the starts), so a seed
gives upstream's masks. Masked values are multiplied by 0. Everything stays on the
device; no host syncs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _block_mask(
    choose_range: Tensor,
    mask_size: int,
    multiplicity: int,
    max_length: float | None,
    max_ratio: float,
) -> Tensor:
    """[B, mask_size] float mask, 0 inside any of `multiplicity` random blocks, else 1.

    Args:
      choose_range: [B] valid length per example (blocks start inside it).
      mask_size: length of the masked axis.
      multiplicity: blocks per example.
      max_length: largest block; None means `max_ratio * choose_range` (dynamic).
      max_ratio: blocks are also at most `max(1, int(max_ratio * choose_range))` long.
    """
    batch_size = choose_range.shape[0]
    device = choose_range.device
    if max_length is not None and max_length > 0:
        max_len = torch.full((batch_size,), float(max_length), device=device)
    else:
        max_len = choose_range * max_ratio
    portion = torch.rand(batch_size, multiplicity, device=device)
    sizes = (max_len[:, None] * portion).long()
    ranges = choose_range[:, None].expand(batch_size, multiplicity)
    length_bound = (max_ratio * ranges).long().clamp(min=1)
    length = torch.minimum(sizes, length_bound)
    start = (torch.rand(batch_size, multiplicity, device=device) * (ranges - length + 1)).long()
    end = start + length - 1
    positions = torch.arange(mask_size, device=device)[None, None, :]
    inside = (positions >= start[..., None]) & (positions <= end[..., None])
    return 1.0 - inside.any(dim=1).float()


class SpecAug(nn.Module):
    """Zeroes `time_mask_count` time blocks and `freq_mask_count` frequency blocks.

    Args:
      freq_mask_count: frequency masks per example (2 upstream; 4 in a variant).
      freq_mask_max_bins: largest frequency mask (27).
      time_mask_count: time masks per example (10; 15 in a variant).
      time_mask_max_frames: largest time mask (40), ignored when
        `use_dynamic_time_mask_max_frames` (upstream's setting).
      time_mask_max_ratio: time masks are at most this fraction of the valid length (0.05).
      use_dynamic_time_mask_max_frames: size time masks by `time_mask_max_ratio` only.
    """

    def __init__(
        self,
        freq_mask_count: int = 2,
        freq_mask_max_bins: int = 27,
        time_mask_count: int = 10,
        time_mask_max_frames: int = 40,
        time_mask_max_ratio: float = 0.05,
        use_dynamic_time_mask_max_frames: bool = True,
    ) -> None:
        super().__init__()
        self.freq_mask_count = freq_mask_count
        self.freq_mask_max_bins = freq_mask_max_bins
        self.time_mask_count = time_mask_count
        self.time_mask_max_frames = time_mask_max_frames
        self.time_mask_max_ratio = time_mask_max_ratio
        self.use_dynamic_time_mask_max_frames = use_dynamic_time_mask_max_frames

    def forward(self, inputs: Tensor, paddings: Tensor) -> tuple[Tensor, Tensor]:
        """[B, T, F] features and [B, T] paddings -> masked features, same paddings."""
        batch_size, time_length, num_freq = inputs.shape
        skip_time = (
            self.time_mask_max_frames == 0 and not self.use_dynamic_time_mask_max_frames
        ) or self.time_mask_max_ratio <= 0.0
        if not skip_time and self.time_mask_count > 0:
            lengths = (1 - paddings).sum(dim=1).long()
            mask = _block_mask(
                lengths,
                time_length,
                self.time_mask_count,
                None if self.use_dynamic_time_mask_max_frames else self.time_mask_max_frames,
                self.time_mask_max_ratio,
            )
            inputs = inputs * mask[:, :, None]
        if self.freq_mask_max_bins != 0 and self.freq_mask_count > 0:
            choose_range = torch.full((batch_size,), float(num_freq), device=inputs.device)
            mask = _block_mask(
                choose_range, num_freq, self.freq_mask_count, self.freq_mask_max_bins, 1.0
            )
            inputs = inputs * mask[:, None, :]
        return inputs, paddings
