"""Upstream AlgoPerf's CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, 4x4 average pool.

Faithful to `algoperf/workloads/cifar/cifar_pytorch/models.py`, which reuses the
ImageNet `BasicBlock`: module and parameter names, registration and RNG-draw order, and
the init (truncated LeCun-normal convs, BN 1/0, zero weight on each block's last BN,
fc N(0, 0.01) with zero bias). 11,173,962 parameters for 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.imagenet_resnet.models import BasicBlock, make_layer, reset_resnet_parameters


class ResNet(nn.Module):
    """ResNet-18 for 32 x 32 inputs.

    Args:
      layers: BasicBlocks per stage.
      num_classes: fc outputs.
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        # Upstream's blocks all share BasicBlock's default ReLU(inplace=True).
        act_fnc = nn.ReLU(inplace=True)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = make_layer(BasicBlock, inplanes, planes, blocks, 1 if i == 0 else 2, act_fnc)
            self.add_module(f'layer{i + 1}', stage)
            inplanes = planes
        self.fc = nn.Linear(512, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_resnet_parameters(self, self.fc, bn_init_scale=0.0)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, 32, 32] -> [B, num_classes] logits."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.avg_pool2d(x, 4)
        return self.fc(torch.flatten(x, 1))


def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes)
