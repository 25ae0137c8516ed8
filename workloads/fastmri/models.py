"""The fastMRI U-Net, as upstream AlgoPerf v0.6 builds it.

Faithful to `algoperf/workloads/fastmri/fastmri_pytorch/models.py` (itself adapted
from facebookresearch/fastMRI `models/unet.py`): module and parameter names (so
`param_shapes` and the parameter-type tree match upstream's), registration order
(`up_conv` is registered before `up_transpose_conv`, so optimizers see parameters in
upstream's order), shapes, the order of RNG draws at construction (so a seed gives
upstream's initial weights), LeCun-normal re-initialisation of every (transposed)
convolution, and the dropout rate given at forward time.

Variants (switches from `spec.extra`): `num_channels`/`num_pool_layers` (model size:
64 and 3), `use_tanh` (Tanh instead of LeakyReLU(0.2) everywhere) and
`use_layer_norm` (GroupNorm(1, eps=1e-6), which has an affine weight and bias, instead
of the affine-free InstanceNorm2d in the ConvBlocks; upstream keeps InstanceNorm2d in
the TransposeConvBlocks even then).

Speed switch (`fast_instance_norm`, no parameters, same math to float rounding): every
InstanceNorm2d is an `InstanceNorm2d` below, which on the CPU computes the norm with
`F.group_norm(x, C)` (one group per channel: the same per-(example, channel) mean and
biased variance, same eps) instead of `F.instance_norm`. The latter reshapes to
[1, B*C, H, W], runs batch norm and returns a *view*, so the in-place LeakyReLU that
follows makes autograd add a CopySlices node that copies the whole gradient in backward.
At [2, 32, 320, 320] on one CPU thread, norm + LeakyReLU forward and backward took
~160-320 ms with instance_norm and ~50-60 ms with group_norm; in a whole base-model train
step the non-convolution time fell ~25% (659 -> 497 ms at batch 1, one thread) and the
step's CPU time ~10% (batch 8, 2 threads: 25-27 s vs 28-30 s; a busy machine, so rough).
The 3x3 convolutions are ~80% of the CPU step and are unchanged. Measured and rejected
on that CPU (AVX2): channels_last (each conv 1.4-1.9x slower in oneDNN) and torch.compile
of model + loss (35-60% more CPU time per step at batch 2 after compiling).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from algoperf import init_utils
from algoperf.pytorch_utils import CustomDropout2d, SequentialWithDropout

DROPOUT_RATE = 0.0


def _activation(use_tanh: bool) -> nn.Module:
    # In place as upstream: saves one activation-sized buffer per block in training.
    return nn.Tanh() if use_tanh else nn.LeakyReLU(negative_slope=0.2, inplace=True)


class InstanceNorm2d(nn.InstanceNorm2d):
    """Affine-free, stat-free `nn.InstanceNorm2d` that may run as `F.group_norm(x, C)`.

    Scope and fallbacks: the group-norm path is taken per call when `fast` is set and the
    input is a 4-D, NCHW-contiguous CPU tensor (where it was measured; see the module
    docstring). Anything else (CUDA, channels_last, unbatched [C, H, W]) runs the stock
    `nn.InstanceNorm2d.forward`. No parameters or buffers either way.
    """

    def __init__(self, num_features: int, fast: bool = False):
        super().__init__(num_features)  # affine=False, track_running_stats=False, eps=1e-5
        self.fast = fast

    def _group_norm_eligible(self, x: Tensor) -> bool:
        return (
            self.fast
            and x.device.type == 'cpu'
            and x.dim() == 4
            and x.shape[1] == self.num_features
            and x.is_contiguous()
        )

    def forward(self, x: Tensor) -> Tensor:
        if self._group_norm_eligible(x):
            return F.group_norm(x, self.num_features, eps=self.eps)
        return super().forward(x)


class ConvBlock(nn.Module):
    """Two x [3x3 conv (no bias), norm, activation, channel dropout]."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        use_tanh: bool,
        use_layer_norm: bool,
        fast_instance_norm: bool = False,
    ):
        super().__init__()
        self._supports_custom_dropout = True
        if use_layer_norm:
            norm_layer = partial(nn.GroupNorm, 1, eps=1e-6)
        else:
            norm_layer = partial(InstanceNorm2d, fast=fast_instance_norm)
        # One activation module used twice, as upstream (it has no parameters, so only
        # the module indices 2 and 6 matter, and they are the same).
        activation = _activation(use_tanh)
        self.conv_layers = SequentialWithDropout(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            norm_layer(out_chans),
            activation,
            CustomDropout2d(),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            norm_layer(out_chans),
            activation,
            CustomDropout2d(),
        )

    def forward(self, x: Tensor, dropout_rate: float) -> Tensor:
        return self.conv_layers(x, dropout_rate)


class TransposeConvBlock(nn.Module):
    """2x2 stride-2 transposed conv (no bias), InstanceNorm2d, activation (no dropout)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        use_tanh: bool,
        use_layer_norm: bool,
        fast_instance_norm: bool = False,
    ):
        super().__init__()
        del use_layer_norm  # Upstream uses InstanceNorm2d here in every variant.
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            InstanceNorm2d(out_chans, fast=fast_instance_norm),
            _activation(use_tanh),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) for single-coil knee reconstruction.

    Args:
      in_chans: input channels (1: the magnitude image).
      out_chans: output channels (1).
      num_channels: channels of the first ConvBlock; doubled at every pooling level.
      num_pool_layers: number of 2x average-pool / 2x transposed-conv levels.
      use_tanh: Tanh instead of LeakyReLU(0.2).
      use_layer_norm: GroupNorm(1) instead of InstanceNorm2d in the ConvBlocks.
      fast_instance_norm: compute every InstanceNorm2d as a group norm where eligible
        (the speed switch of the module docstring; parameters and math unchanged).
    """

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        num_channels: int = 32,
        num_pool_layers: int = 4,
        use_tanh: bool = False,
        use_layer_norm: bool = False,
        fast_instance_norm: bool = False,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.num_channels = num_channels
        self.num_pool_layers = num_pool_layers

        # Every block takes the same (use_tanh, use_layer_norm, fast_instance_norm).
        flags = (use_tanh, use_layer_norm, fast_instance_norm)
        self.down_sample_layers = nn.ModuleList([ConvBlock(in_chans, num_channels, *flags)])
        ch = num_channels
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(ConvBlock(ch, ch * 2, *flags))
            ch *= 2
        self.conv = ConvBlock(ch, ch * 2, *flags)

        # Registration order (up_conv first) fixes the parameter order, as upstream.
        self.up_conv = nn.ModuleList()
        self.up_transpose_conv = nn.ModuleList()
        for _ in range(num_pool_layers - 1):
            self.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch, *flags))
            self.up_conv.append(ConvBlock(ch * 2, ch, *flags))
            ch //= 2
        self.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch, *flags))
        # The output 1x1 conv is the only layer with a bias: `up_conv.<L-1>.1`.
        self.up_conv.append(
            SequentialWithDropout(
                ConvBlock(ch * 2, ch, *flags),
                nn.Conv2d(ch, self.out_chans, kernel_size=1, stride=1),
            )
        )

        # Re-initialise after construction, in module order: the default (Kaiming
        # uniform) draws above still happen first, so the RNG stream is upstream's.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                init_utils.pytorch_default_init(m)

    def forward(self, x: Tensor, dropout_rate: float = DROPOUT_RATE) -> Tensor:
        """[B, in_chans, H, W] -> [B, out_chans, H, W]."""
        stack = []
        output = x
        for layer in self.down_sample_layers:
            output = layer(output, dropout_rate)
            stack.append(output)
            output = F.avg_pool2d(output, kernel_size=2, stride=2, padding=0)

        output = self.conv(output, dropout_rate)

        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = stack.pop()
            output = transpose_conv(output)
            # Odd sizes: reflect-pad one row/column on the bottom/right (shapes are static,
            # so unlike upstream's `torch.sum(torch.tensor(padding))` this needs no tensor).
            pad_right = int(output.shape[-1] != skip.shape[-1])
            pad_bottom = int(output.shape[-2] != skip.shape[-2])
            if pad_right or pad_bottom:
                output = F.pad(output, [0, pad_right, 0, pad_bottom], 'reflect')
            output = torch.cat([output, skip], dim=1)
            output = conv(output, dropout_rate)
        return output
