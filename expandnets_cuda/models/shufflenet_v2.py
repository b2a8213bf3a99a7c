"""ShuffleNetV2 (ImageNet), width 0.5x by default: 1,366,792 parameters (the paper's "1.37M").

Stem 3x3 conv (stride 2) + BN + ReLU and a 3x3 max-pool, three stages of [4, 8, 4] units
(the first of each has stride 2 and two branches; the others split the channels in half and
transform one half), a 1x1 conv to 1024, global average pooling and a Linear; channel shuffle
(2 groups) after every unit. Convs carry no bias.
"""
from __future__ import annotations

import torch
from torch import nn

SHUFFLENET_V2_WIDTHS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
                        1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}
SHUFFLENET_V2_REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _pointwise(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _depthwise(channels: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv + BN, no activation (as ShuffleNetV2 has it)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
                         nn.BatchNorm2d(channels))


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        branch = cout // 2
        if stride == 1 and cin != 2 * branch:
            raise ValueError(f"a stride-1 unit keeps its width: cin={cin}, cout={cout}")
        self.stride = stride
        self.branch1 = (nn.Sequential(_depthwise(cin, stride), _pointwise(cin, branch))
                        if stride > 1 else None)
        self.branch2 = nn.Sequential(_pointwise(cin if stride > 1 else branch, branch),
                                     _depthwise(branch, stride), _pointwise(branch, branch))

    def forward(self, x):
        if self.branch1 is None:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(transformed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, width: float = 0.5, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        if width not in SHUFFLENET_V2_WIDTHS:
            raise ValueError(f"width must be one of {tuple(SHUFFLENET_V2_WIDTHS)}, got {width!r}")
        widths = SHUFFLENET_V2_WIDTHS[width]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], widths[0]
        for repeats, cout in zip(SHUFFLENET_V2_REPEATS, widths[1:4]):
            stages.append(nn.Sequential(ShuffleUnit(cin, cout, 2),
                                        *(ShuffleUnit(cout, cout, 1) for _ in range(repeats - 1))))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = _pointwise(cin, widths[4])
        self.classifier = nn.Linear(widths[4], num_classes)

    def forward(self, x):
        x = self.head(self.stages(self.pool(self.stem(x))))
        return self.classifier(x.mean((2, 3)))


def shufflenet_v2_x0_5(num_classes: int = 1000, in_channels: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(0.5, num_classes, in_channels)
