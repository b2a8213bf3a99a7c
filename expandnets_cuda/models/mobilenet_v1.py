"""MobileNet (V1) for CIFAR (stride-1 stem, 32x32 inputs) and ImageNet (stride-2 stem, 224x224).

A 3x3 stem conv 3 -> 32, then 13 depthwise-separable blocks (3x3 depthwise + BN + ReLU, 1x1
pointwise + BN + ReLU), global average pooling and one Linear(1024, classes); convs carry no bias.
CIFAR-10: 3,217,226 parameters (the paper's Table 2 "3.22M"); ImageNet: 4,231,976.
"""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F

# (out_channels, stride) of each depthwise-separable block; the depthwise conv takes the stride.
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn2(self.pointwise(F.relu(self.bn1(self.depthwise(x))))))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, stem_stride: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 32, 3, stem_stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        blocks, cin = [], 32
        for cout, stride in MOBILENET_V1_BLOCKS:
            blocks.append(DepthwiseSeparable(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def mobilenet_v1_cifar(num_classes: int = 10, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels, stem_stride=1)


def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels, stem_stride=2)
