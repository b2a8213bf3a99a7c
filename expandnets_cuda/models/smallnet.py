"""The paper's SmallNets (CIFAR).

- ``smallnet3``: three 3x3 convs (8, 16, 32 channels, no padding), each followed by
  BN + ReLU + 2x2 max-pool, then FC 128 -> 64 -> classes (the paper's main CIFAR SmallNet).
- ``smallnet7``: four 7x7 convs 3 -> 8 -> 16 -> 32 -> 64 with padding 3, BN + ReLU + max-pool
  after each, FC 256 -> 64 -> classes: 150,346 parameters (the rebuttal's Table 1).
Every conv/linear carries a bias (the paper's CIFAR convention).
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
