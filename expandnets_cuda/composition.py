"""Differentiable composition of expanded weights in plain PyTorch (the ``torch`` composer).

Autograd through these few batched GEMMs *is* the composition's backward: it maps
``dW_eff, db_eff`` to the gradient of every expanded parameter. The work is weight-sized, so it
does not grow with batch or image size (DESIGN.md section 3).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Composed = Tuple[Tensor, Optional[Tensor]]


def cl_cost(m_g: int, a: int, c: int, o: int, taps: int, groups: int):
    """Multiply-adds of the two CL orders: ``((W3 W2) W1, W3 (W2 W1))``, per group and tap."""
    return (groups * taps * (o * c * a + o * a * m_g), groups * taps * (c * a * m_g + o * c * m_g))


def compose_cl(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Tensor,
               b3: Optional[Tensor], groups: int) -> Composed:
    """``W[:, :, y, x] = W3 @ W2[:, :, y, x] @ W1`` per group, as two batched GEMMs over all taps.

    Shapes: ``w1 (g*a, i, 1, 1)``, ``w2 (g*c, a, kh, kw)``, ``w3 (g*o, c, 1, 1)``; result ``(g*o, i, kh, kw)``.
    """
    g = groups
    a, i = w1.shape[0] // g, w1.shape[1]
    c, _, kh, kw = w2.shape[0] // g, *w2.shape[1:]
    o, taps = w3.shape[0] // g, kh * kw
    W1 = w1.reshape(g, a, i)
    W2 = w2.reshape(g, c, a, taps)
    W3 = w3.reshape(g, o, c)
    cost_w3_first, cost_w1_first = cl_cost(i, a, c, o, taps, g)
    if cost_w3_first <= cost_w1_first:
        m = torch.bmm(W3, W2.reshape(g, c, a * taps)).reshape(g, o, a, taps)
        w = torch.bmm(m.transpose(2, 3).reshape(g, o * taps, a), W1).reshape(g, o, taps, i)
    else:
        m = torch.bmm(W2.transpose(2, 3).reshape(g, c * taps, a), W1).reshape(g, c, taps * i)
        w = torch.bmm(W3, m).reshape(g, o, taps, i)
    weight = w.transpose(2, 3).reshape(g * o, i, kh, kw)
    if b1 is None:
        return weight, None
    inner = torch.bmm(W2.sum(dim=3), b1.reshape(g, a, 1)) + b2.reshape(g, c, 1)
    bias = torch.bmm(W3, inner).reshape(g * o) + b3
    return weight, bias


def compose_ck(weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]]) -> Composed:
    """Fold a stack of 3x3 kernels left to right; each fold is one small ``conv2d``.

    ``conv2d`` of the earlier kernel (its input channels as the batch) with the later kernel
    flipped, padded by ``k-1``, is exactly the full correlation ``K[o, i, u+v] = sum_c L[o,c,v] E[c,i,u]``.
    """
    kernel = weights[0]
    bias = biases[0] if biases is not None else None
    for j in range(1, len(weights)):
        later = weights[j]
        ph, pw = later.shape[2] - 1, later.shape[3] - 1
        kernel = F.conv2d(kernel.transpose(0, 1), later.flip(2, 3), padding=(ph, pw)).transpose(0, 1)
        if bias is not None:
            bias = later.sum(dim=(2, 3)) @ bias + biases[j]
    return kernel.contiguous(), bias


def compose_fc(weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]]) -> Composed:
    """``W = W3 W2 W1`` in the cheaper order; ``b = W3 (W2 b1 + b2) + b3``."""
    w1, w2, w3 = weights
    (rb, ra), a, b = w2.shape, w1.shape[1], w3.shape[0]
    if b * rb * ra + b * ra * a <= rb * ra * a + b * rb * a:
        weight = (w3 @ w2) @ w1
    else:
        weight = w3 @ (w2 @ w1)
    if biases is None:
        return weight, None
    b1, b2, b3 = biases
    return weight, w3 @ (w2 @ b1 + b2) + b3
