"""The paper's compact CIFAR models, used by the tests, benchmarks and examples.

- ``smallnet3``: three 3x3 convs (8, 16, 32 channels, no padding), each followed by
  BN + ReLU + 2x2 max-pool, then FC 128 -> 64 -> classes (the paper's main CIFAR SmallNet).
- ``smallnet7``: four 7x7 convs 3 -> 8 -> 16 -> 32 -> 64 with padding 3, BN + ReLU + max-pool
  after each, FC 256 -> 64 -> classes: 150,346 parameters (the rebuttal's Table 1).
- ``mobilenet_v2_cifar``: MobileNetV2 for 32x32 inputs (stride 1 in the stem and the second stage).
Every conv/linear of the SmallNets carries a bias (the paper's CIFAR convention); MobileNetV2's
convs carry none (BatchNorm follows them).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding, bias=True)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.bn(self.conv(x))))


class SmallNet(nn.Module):
    def __init__(self, channels: Sequence[int], kernel_size: int, padding: int, input_size: int = 32,
                 hidden: int = 64, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(ConvBlock(widths[i], widths[i + 1], kernel_size, padding)
                                    for i in range(len(channels)))
        size = input_size
        for _ in channels:
            size = (size + 2 * padding - kernel_size + 1) // 2
        if size < 1:
            raise ValueError(f"input_size={input_size} is too small for {len(channels)} blocks")
        self.fc1 = nn.Linear(widths[-1] * size * size, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def smallnet3(num_classes: int = 10, input_size: int = 32, in_channels: int = 3) -> SmallNet:
    return SmallNet((8, 16, 32), kernel_size=3, padding=0, input_size=input_size,
                    num_classes=num_classes, in_channels=in_channels)


def smallnet7(num_classes: int = 10, input_size: int = 32, in_channels: int = 3) -> SmallNet:
    return SmallNet((8, 16, 32, 64), kernel_size=7, padding=3, input_size=input_size,
                    num_classes=num_classes, in_channels=in_channels)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride) -> 1x1 project, BN after each, ReLU6 after the first two."""

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
        out = torch.nn.functional.relu6(self.bn1(self.conv1(x)))
        out = torch.nn.functional.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.use_residual else out


# (expansion, out_channels, blocks, stride) per stage; CIFAR keeps stride 1 in the second stage.
MOBILENET_V2_CIFAR_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


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
        x = torch.nn.functional.relu6(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        x = torch.nn.functional.relu6(self.bn2(self.conv2(x)))
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


def mobilenet_v2_cifar(num_classes: int = 10, in_channels: int = 3) -> MobileNetV2Cifar:
    return MobileNetV2Cifar(num_classes=num_classes, in_channels=in_channels)
