"""Per-example SSIM of de-normalised reconstructions, as upstream's fastMRI eval.

Faithful to `algoperf/workloads/fastmri/fastmri_pytorch/ssim.py` (a port of the JAX
version, itself `skimage.metrics.structural_similarity` with the arguments of
arXiv:1811.08839): outputs and targets are de-normalised with each slice's `mean`
and `std`; the local statistics use a 7x7 uniform window applied as two 1-D box
filters over symmetric ("mirror including the edge") padding; K1 = 0.01, K2 = 0.03;
variances and covariance carry the sample correction 49/48; the data range is the
slice's `volume_max` (0, i.e. a padded example, is replaced by 1); the SSIM map is
averaged without its 3-pixel border; per-example values are clipped to [-1, 1].

Differences: upstream maps the per-image function over the batch with `torch.vmap`;
here the same operations run on the whole batch at once (same values up to float
summation order), and no global `DEVICE` is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03


def _symmetric_pad_last(x: Tensor, pad: int) -> Tensor:
    """Pad the last dim by `pad` on both sides, mirroring including the edge value.

    torchvision's `pad(padding_mode='symmetric')` (numpy's 'symmetric'), which upstream
    uses; `F.pad` has no such mode. The border it fills is cropped from the SSIM map,
    so its values never reach the metric, but the filtered maps equal upstream's.
    """
    left = x[..., :pad].flip(-1)
    right = x[..., -pad:].flip(-1)
    return torch.cat([left, x, right], dim=-1)


def _box_filter_last(x: Tensor, size: int) -> Tensor:
    """Mean over a `size`-wide window along the last dim; same shape out."""
    padded = _symmetric_pad_last(x, size // 2)
    lead = padded.shape[:-1]
    ones = torch.ones(1, 1, size, dtype=x.dtype, device=x.device)
    out = F.conv1d(padded.reshape(-1, 1, padded.shape[-1]), ones) / size
    return out.reshape(*lead, x.shape[-1])


def uniform_filter(images: Tensor, size: int = WIN_SIZE) -> Tensor:
    """Separable `size` x `size` uniform filter of [B, H, W] images (rows, then columns)."""
    rows = _box_filter_last(images, size)
    return _box_filter_last(rows.transpose(-1, -2), size).transpose(-1, -2)


def structural_similarity(
    im1: Tensor,
    im2: Tensor,
    data_range: Tensor | float = 1.0,
    win_size: int = WIN_SIZE,
    k1: float = K1,
    k2: float = K2,
) -> Tensor:
    """Mean SSIM of each pair of [B, H, W] images (upstream's per-image function, batched).

    Args:
      im1: [B, H, W] images.
      im2: [B, H, W] images.
      data_range: scalar or [B] dynamic range of the images.
      win_size: odd side of the uniform window.
      k1: constant of the luminance term.
      k2: constant of the contrast/structure term.

    Returns:
      [B] mean of the SSIM map without its (win_size - 1) / 2 border.
    """
    # Upstream counts points over the per-image dims (2 under vmap): 49 for 7x7.
    num_points = win_size ** (im1.dim() - 1)
    cov_norm = num_points / (num_points - 1)  # Sample (unbiased) covariance.

    ux = uniform_filter(im1, win_size)
    uy = uniform_filter(im2, win_size)
    uxx = uniform_filter(im1 * im1, win_size)
    uyy = uniform_filter(im2 * im2, win_size)
    uxy = uniform_filter(im1 * im2, win_size)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)

    data_range = torch.as_tensor(data_range, dtype=im1.dtype, device=im1.device)
    data_range = data_range.reshape(-1, 1, 1) if data_range.dim() else data_range
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2

    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux**2 + uy**2 + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)

    pad = (win_size - 1) // 2  # The filter radius: drop the padded border.
    return s[:, pad:-pad, pad:-pad].mean(dim=(-2, -1))


def ssim(
    logits: Tensor,
    targets: Tensor,
    mean: Tensor | None = None,
    std: Tensor | None = None,
    volume_max: Tensor | None = None,
) -> Tensor:
    """Per-example SSIM of normalised [B, H, W] outputs and targets (upstream's `ssim`).

    Args:
      logits: [B, H, W] model outputs in the normalised (instance-norm) scale.
      targets: [B, H, W] targets in the same scale.
      mean: [B] per-slice means used to normalise (default 0).
      std: [B] per-slice standard deviations (default 1).
      volume_max: [B] max of each slice's volume: the SSIM data range (default 1).

    Returns:
      [B] SSIM per example, clipped to [-1, 1] (NaN stays NaN, as upstream).
    """
    batch, device = logits.shape[0], logits.device
    if volume_max is None:
        volume_max = torch.ones(batch, device=device)
    # A padded example has volume_max 0, which would make the SSIM NaN (0 / 0).
    volume_max = torch.where(volume_max == 0, torch.ones_like(volume_max), volume_max)
    if mean is None:
        mean = torch.zeros(batch, device=device)
    if std is None:
        std = torch.ones(batch, device=device)
    shape = (-1,) + (1,) * (logits.dim() - 1)
    mean = mean.reshape(shape)
    std = std.reshape(shape)
    ssims = structural_similarity(logits * std + mean, targets * std + mean, volume_max)
    # Out-of-range values (possible from float error) go to SSIM's bounds, as upstream.
    ssims = torch.where(ssims > 1, torch.ones_like(ssims), ssims)
    return torch.where(ssims < -1, -torch.ones_like(ssims), ssims)
