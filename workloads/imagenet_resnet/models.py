"""ResNet v1.5 (torchvision layout) as upstream AlgoPerf v0.6 builds it.

Faithful to `algoperf/workloads/imagenet_resnet/imagenet_pytorch/models.py`: module
and parameter names (so `param_shapes` and the parameter-type tree match upstream's:
`conv*`/`downsample.conv` are conv weights, `bn*`/`downsample.bn` batch-norm scales and
biases, `fc` the output layer), registration order, the order of RNG draws at
construction (torch's default inits run first and are then overwritten, so a seed gives
upstream's initial weights), and the init: truncated LeCun-normal convs, BN weight 1 /
bias 0, the last BN of every residual branch at `bn_init_scale` (0: zero-init
residual), fc weight N(0, 0.01), bias 0. The stride of a downsampling bottleneck is on
its 3x3 conv (v1.5). One activation module is shared by every block, as upstream (it
has no parameters).

`BasicBlock` is reused by the CIFAR ResNet-18 (`workloads/cifar/models.py`), as
upstream does.
"""

from __future__ import annotations

import collections

import torch
from torch import Tensor, nn

from algoperf.init_utils import pytorch_default_init


def activation(use_silu: bool = False, use_gelu: bool = False) -> nn.Module:
    """Upstream's activation switch: ReLU, SiLU or tanh-approximated GELU."""
    if use_silu and use_gelu:
        raise RuntimeError('Cannot use both GELU and SiLU activations.')
    if use_silu:
        return nn.SiLU(inplace=True)
    if use_gelu:
        return nn.GELU(approximate='tanh')
    return nn.ReLU(inplace=True)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        act_fnc: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act_fnc = act_fnc if act_fnc is not None else nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act_fnc(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.act_fnc(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 with 4x expansion (ResNet-50)."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        act_fnc: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act_fnc = act_fnc if act_fnc is not None else nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act_fnc(self.bn1(self.conv1(x)))
        out = self.act_fnc(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.act_fnc(out)


Block = type[BasicBlock | Bottleneck]


def make_layer(
    block: Block, inplanes: int, planes: int, blocks: int, stride: int, act_fnc
) -> nn.Sequential:
    """One stage; the first block downsamples (1x1 conv + BN named `downsample.{conv,bn}`)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            collections.OrderedDict([
                ('conv', conv1x1(inplanes, planes * block.expansion, stride)),
                ('bn', nn.BatchNorm2d(planes * block.expansion)),
            ])
        )  # fmt: skip
    layers = [block(inplanes, planes, stride, downsample, act_fnc)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, act_fnc=act_fnc))
    return nn.Sequential(*layers)


def reset_resnet_parameters(model: nn.Module, fc: nn.Linear, bn_init_scale: float) -> None:
    """Upstream's init, in its order: convs, BNs, fc, then the residual branches' last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            pytorch_default_init(m)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    nn.init.normal_(fc.weight, std=1e-2)
    nn.init.constant_(fc.bias, 0.0)
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            nn.init.constant_(m.last_bn.weight, bn_init_scale)


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7/2 stem, 3x3/2 max-pool, four stages, global average pool, fc.

    Args:
      block: `Bottleneck` (ResNet-50) or `BasicBlock`.
      layers: blocks per stage.
      num_classes: fc outputs.
      act_fnc: the activation module, shared by every block (see `activation`).
      bn_init_scale: initial weight of the last BN in each residual branch.
    """

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        act_fnc: nn.Module | None = None,
        bn_init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        act_fnc = act_fnc if act_fnc is not None else nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act_fnc = act_fnc
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = make_layer(block, inplanes, planes, blocks, 1 if i == 0 else 2, act_fnc)
            self.add_module(f'layer{i + 1}', stage)
            inplanes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        reset_resnet_parameters(self, self.fc, bn_init_scale)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, num_classes] logits."""
        x = self.maxpool(self.act_fnc(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(
    act_fnc: nn.Module | None = None, bn_init_scale: float = 0.0, num_classes: int = 1000
) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, act_fnc, bn_init_scale)


def resnet18(
    act_fnc: nn.Module | None = None, bn_init_scale: float = 0.0, num_classes: int = 1000
) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, act_fnc, bn_init_scale)
