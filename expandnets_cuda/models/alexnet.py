"""A compact AlexNet for ImageNet (our reconstruction of the paper's Table S6 network).

AlexNet's five convolutions (11x11 stride 4, 5x5, then three 3x3; ReLU after each, 3x3/2
max-pools after the first, second and fifth) with 128, 256, 512, 512, 512 channels by default,
then global average pooling and one Linear (no 4096-wide FC layers: the point is a compact
network). Convs carry a bias, as in AlexNet. The 11x11 and 5x5 kernels are the ones CK expands.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn
from torch.nn import functional as F

ALEXNET_KERNELS = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))  # (kernel, stride, padding)
POOL_AFTER = (0, 1, 4)


class CompactAlexNet(nn.Module):
    def __init__(self, channels: Sequence[int] = (128, 256, 512, 512, 512), num_classes: int = 1000,
                 in_channels: int = 3):
        super().__init__()
        channels = tuple(channels)
        if len(channels) != 5:
            raise ValueError(f"channels must give the widths of the 5 convolutions, got {channels}")
        widths = (in_channels, *channels)
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], k, s, p)
                                   for i, (k, s, p) in enumerate(ALEXNET_KERNELS))
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i in POOL_AFTER:
                x = F.max_pool2d(x, 3, 2)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def alexnet_compact(num_classes: int = 1000, in_channels: int = 3,
                    channels: Sequence[int] = (128, 256, 512, 512, 512)) -> CompactAlexNet:
    return CompactAlexNet(channels, num_classes, in_channels)
