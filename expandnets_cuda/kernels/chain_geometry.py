"""The geometry of a chain op's arguments (shared by the Triton and CUDA chain ops and their fake
implementations, so both agree on output shapes): which sizes the layers have, where the layer-1
grid and the output are, and the checks that give a clear error before any kernel runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

Tensor = torch.Tensor


def like_layout(x: Tensor, shape, dtype=None) -> Tensor:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, device=x.device, dtype=dtype or x.dtype, memory_format=fmt)


@dataclass(frozen=True)
class ChainGeometry:
    N: int
    H: int
    W: int
    G: int
    MG: int
    A: int
    C: int
    O: int  # 0 without layer 3
    KH1: int
    KW1: int
    KH: int
    KW: int
    H1: int
    W1: int
    P: int
    Q: int

    @property
    def K1(self) -> int:
        return self.MG * self.KH1 * self.KW1

    @property
    def out_channels(self) -> int:
        return self.G * (self.O or self.C)


def geometry(x: Tensor, w1: Tensor, w2: Tensor, w3: Optional[Tensor], pads, dilation1, stride, dilation,
             groups: int) -> ChainGeometry:
    N, M, H, W = x.shape
    G = groups
    A, MG, KH1, KW1 = w1.shape[0] // G, w1.shape[1], w1.shape[2], w1.shape[3]
    C, KH, KW = w2.shape[0] // G, w2.shape[2], w2.shape[3]
    O = w3.shape[0] // G if w3 is not None else 0
    H1 = H + pads[2] + pads[3] - dilation1[0] * (KH1 - 1)
    W1 = W + pads[0] + pads[1] - dilation1[1] * (KW1 - 1)
    P = (H1 - dilation[0] * (KH - 1) - 1) // stride[0] + 1
    Q = (W1 - dilation[1] * (KW - 1) - 1) // stride[1] + 1
    return ChainGeometry(N, H, W, G, MG, A, C, O, KH1, KW1, KH, KW, H1, W1, P, Q)


def check_chain_args(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups) -> ChainGeometry:
    if x.dim() != 4 or w1.dim() != 4 or w2.dim() != 4:
        raise ValueError(f"chain: x, w1 and w2 must be 4-D, got {tuple(x.shape)}, {tuple(w1.shape)}, {tuple(w2.shape)}")
    if len(pads) != 4 or len(dilation1) != 2 or len(stride) != 2 or len(dilation) != 2:
        raise ValueError("chain: pads takes 4 ints (left, right, top, bottom); dilation1, stride, dilation 2 each")
    if (b1 is None) != (b2 is None) or (w3 is not None and (b1 is None) != (b3 is None)):
        raise ValueError("chain: the biases must be all given or all None")
    geo = geometry(x, w1, w2, w3, pads, dilation1, stride, dilation, groups)
    if x.shape[1] != groups * geo.MG or w2.shape[1] != geo.A or (w3 is not None and w3.shape[1] != geo.C):
        raise ValueError(f"chain: channel counts do not chain with groups={groups}: x {tuple(x.shape)}, "
                         f"w1 {tuple(w1.shape)}, w2 {tuple(w2.shape)}, w3 {None if w3 is None else tuple(w3.shape)}")
    if geo.KH1 * geo.KW1 > 1 and groups != 1:
        raise ValueError("chain: a KxK first layer (CK) needs groups=1")
    if geo.P < 1 or geo.Q < 1:
        raise ValueError(f"chain: input {tuple(x.shape)} with pads {list(pads)} is smaller than the unit's receptive field")
    return geo
