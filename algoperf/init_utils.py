"""Upstream's default PyTorch initialisation (LeCun-normal, truncated)."""

from __future__ import annotations

import math

import torch
from torch import nn

# std of a unit normal truncated to [-2, 2]; dividing by it makes the truncated
# draw have std sqrt(1/fan_in), as JAX's lecun_normal does.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def pytorch_default_init(module: nn.Module) -> None:
    """LeCun-normal weights truncated at ±2 std, zero bias (upstream's init)."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_NORMAL_STD
    with torch.no_grad():
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if getattr(module, 'bias', None) is not None:
            nn.init.constant_(module.bias, 0.0)
