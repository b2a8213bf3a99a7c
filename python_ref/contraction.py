"""Contraction of expanded units, written for clarity and computed in float64.

Every function takes the sub-layers' weights (and biases, or ``None``) in chain order and returns
the compact ``(weight, bias)`` in float64. See docs/design.md section 2 for the algebra.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .spec import ConvUnitSpec, LinearUnitSpec

Tensor = torch.Tensor
Biases = Optional[Sequence[Tensor]]


def contract_cl(weights: Sequence[Tensor], biases: Biases, groups: int) -> Tuple[Tensor, Optional[Tensor]]:
    """CL: per group and tap ``W[:, :, y, x] = W3 @ W2[:, :, y, x] @ W1``."""
    w1, w2, w3 = (w.double() for w in weights)
    g = groups
    rm, m_g = w1.shape[0], w1.shape[1]
    rn, _, kh, kw = w2.shape
    n = w3.shape[0]
    W1 = w1.reshape(g, rm // g, m_g)
    W2 = w2.reshape(g, rn // g, rm // g, kh, kw)
    W3 = w3.reshape(g, n // g, rn // g)
    weight = torch.einsum("gon,gnmyx,gmi->goiyx", W3, W2, W1).reshape(n, m_g, kh, kw)
    if biases is None:
        return weight, None
    b1, b2, b3 = (b.double() for b in biases)
    # A constant b1 field passes a "valid" kxk conv as (sum over taps of W2) @ b1.
    inner = torch.einsum("gnmyx,gm->gn", W2, b1.reshape(g, rm // g)) + b2.reshape(g, rn // g)
    bias = torch.einsum("gon,gn->go", W3, inner).reshape(n) + b3
    return weight, bias


def compose_two_kernels(later: Tensor, earlier: Tensor) -> Tensor:
    """Kernel of ``conv(conv(x, earlier), later)`` (both stride 1, same dilation): a full 2-D
    correlation summed over the middle channel, ``K[o, i, u + v] = sum_c later[o, c, v] earlier[c, i, u]``."""
    o, _, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    out = later.new_zeros(o, i, a + b - 1, a2 + b2 - 1)
    for vy in range(a):
        for vx in range(a2):
            for uy in range(b):
                for ux in range(b2):
                    out[:, :, vy + uy, vx + ux] += later[:, :, vy, vx] @ earlier[:, :, uy, ux]
    return out


def contract_ck(weights: Sequence[Tensor], biases: Biases) -> Tuple[Tensor, Optional[Tensor]]:
    """CK: fold the 3x3 stack left to right; biases fold with the spatial sum of the later kernel."""
    kernel = weights[0].double()
    bias = biases[0].double() if biases is not None else None
    for j in range(1, len(weights)):
        w = weights[j].double()
        kernel = compose_two_kernels(w, kernel)
        if bias is not None:
            bias = w.sum(dim=(2, 3)) @ bias + biases[j].double()
    return kernel, bias


def contract_fc(weights: Sequence[Tensor], biases: Biases) -> Tuple[Tensor, Optional[Tensor]]:
    """FC: ``W = W3 @ W2 @ W1``, ``b = W3 @ (W2 @ b1 + b2) + b3``."""
    w1, w2, w3 = (w.double() for w in weights)
    weight = w3 @ w2 @ w1
    if biases is None:
        return weight, None
    b1, b2, b3 = (b.double() for b in biases)
    return weight, w3 @ (w2 @ b1 + b2) + b3


def to_conv2d(spec: ConvUnitSpec, weight: Tensor, bias: Optional[Tensor], like: Tensor) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` holding a contracted kernel, on ``like``'s device and dtype."""
    conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, stride=spec.stride,
                     padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
                     bias=bias is not None, padding_mode=spec.padding_mode,
                     device=like.device, dtype=like.dtype)
    return _filled(conv, weight, bias)


def to_linear(spec: LinearUnitSpec, weight: Tensor, bias: Optional[Tensor], like: Tensor) -> nn.Linear:
    linear = nn.Linear(spec.in_features, spec.out_features, bias=bias is not None,
                       device=like.device, dtype=like.dtype)
    return _filled(linear, weight, bias)


def _filled(layer: nn.Module, weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


__all__: List[str] = ["contract_cl", "contract_ck", "contract_fc", "compose_two_kernels",
                      "to_conv2d", "to_linear"]
