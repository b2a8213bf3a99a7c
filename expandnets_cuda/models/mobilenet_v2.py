"""MobileNetV2 for CIFAR (32x32) and ImageNet (224x224).

- ``mobilenet_v2_cifar``: stride 1 in the stem and the second stage; every block has its 1x1
  expand conv (also at t=1) and a 1x1 conv shortcut where a stride-1 block changes width:
  2,296,922 parameters, the paper's Table 2 "2.30M".
- ``mobilenet_v2``: the standard ImageNet network (no expand conv at t=1, identity residuals only,
  dropout 0.2 before the classifier): 3,504,872 parameters, the paper's "3.50M".
Convs carry no bias (BatchNorm follows each).
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F

# (expansion t, out_channels c, blocks n, stride s) per stage, as in the MobileNetV2 paper.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# CIFAR keeps stride 1 in the second stage (and in the stem).
MOBILENET_V2_CIFAR_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """CIFAR block: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project, BN after each, ReLU6
    after the first two; stride-1 blocks add a shortcut (a 1x1 conv + BN where widths differ)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        self.conv1 = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.use_residual = stride == 1
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu6(self.bn1(self.conv1(x)))
        out = F.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.use_residual else out


class MobileNetV2Cifar(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks, cin = [], 32
        for expansion, cout, count, stride in MOBILENET_V2_CIFAR_STAGES:
            for i in range(count):
                blocks.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = F.relu6(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        x = F.relu6(self.bn2(self.conv2(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def mobilenet_v2_cifar(num_classes: int = 10, in_channels: int = 3) -> MobileNetV2Cifar:
    return MobileNetV2Cifar(num_classes=num_classes, in_channels=in_channels)


def _conv_bn(cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """conv -> BN (the activation, when there is one, is the caller's)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class ImageNetInvertedResidual(nn.Module):
    """ImageNet block: [1x1 expand (t > 1)] -> 3x3 depthwise (stride) -> 1x1 project; the
    identity residual only where stride is 1 and the width is kept."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv_bn(cin, hidden, 1) if expansion != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = F.relu6(self.expand(x)) if self.expand is not None else x
        out = self.project(F.relu6(self.depthwise(out)))
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        self.stem = _conv_bn(in_channels, 32, 3, stride=2)
        blocks, cin = [], 32
        for expansion, cout, count, stride in MOBILENET_V2_STAGES:
            for i in range(count):
                blocks.append(ImageNetInvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, 1280, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu6(self.stem(x)))
        x = F.adaptive_avg_pool2d(F.relu6(self.head(x)), 1).flatten(1)
        return self.classifier(self.dropout(x))


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels)
