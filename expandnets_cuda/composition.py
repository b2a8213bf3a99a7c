"""Differentiable composition of expanded weights in plain PyTorch (the ``torch`` composer).

Autograd through these few batched GEMMs *is* the composition's backward: it maps
``dW_eff, db_eff`` to the gradient of every expanded parameter. The work is weight-sized, so it
does not grow with batch or image size (DESIGN.md section 3).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor
Composed = Tuple[Tensor, Optional[Tensor]]


def cl_cost(m_g: int, a: int, c: int, o: int, taps: int, groups: int):
    """Multiply-adds of the two CL orders: ``((W3 W2) W1, W3 (W2 W1))``, per group and tap."""
    return (groups * taps * (o * c * a + o * a * m_g), groups * taps * (c * a * m_g + o * c * m_g))


def compose_cl(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Tensor,
               b3: Optional[Tensor], groups: int) -> Composed:
    """``W[:, :, y, x] = W3 @ W2[:, :, y, x] @ W1`` per group, as two batched GEMMs over all taps.

    Shapes: ``w1 (g*a, i, 1, 1)``, ``w2 (g*c, a, kh, kw)``, ``w3 (g*o, c, 1, 1)``; result
    ``(g*o, i, kh, kw)``. The order with fewer multiply-adds wins; each order keeps its GEMMs large
    and avoids copying ``w2`` (the largest tensor) where it can (measured on CPU, fwd+bwd).
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
        w = torch.bmm(m.transpose(2, 3).reshape(g, o * taps, a), W1).reshape(g, o, taps, i).transpose(2, 3)
    elif taps >= 16:  # enough taps per GEMM to contract over a in place, without transposing w2
        m = torch.matmul(W1.transpose(1, 2).unsqueeze(1), W2)  # (g, c, i, taps)
        w = torch.bmm(W3, m.reshape(g, c, i * taps))
    else:
        m = torch.bmm(W2.transpose(2, 3).reshape(g, c * taps, a), W1).reshape(g, c, taps * i)
        w = torch.bmm(W3, m).reshape(g, o, taps, i).transpose(2, 3)
    weight = w.reshape(g * o, i, kh, kw)
    if b1 is None:
        return weight, None
    inner = torch.bmm(W2.sum(dim=3), b1.reshape(g, a, 1)) + b2.reshape(g, c, 1)
    bias = torch.bmm(W3, inner).reshape(g * o) + b3
    return weight, bias


def _tap_sum_index(later: Tensor, earlier: Tensor, device) -> Tensor:
    """Flat output tap ``(vy+uy) * width + (vx+ux)`` for every (later tap v, earlier tap u) pair."""
    (a, a2), (b, b2) = later.shape[2:], earlier.shape[2:]
    width = a2 + b2 - 1
    vy, vx, uy, ux = torch.meshgrid(torch.arange(a), torch.arange(a2), torch.arange(b), torch.arange(b2),
                                    indexing="ij")
    return ((vy + uy) * width + (vx + ux)).reshape(-1).to(device)


def compose_two_kernels(later: Tensor, earlier: Tensor) -> Tensor:
    """Kernel of ``conv(conv(x, earlier), later)``: ``K[o, i, u+v] = sum_c later[o,c,v] earlier[c,i,u]``.

    One GEMM forms every (v, u) tap product, then ``index_add`` sums the pairs that land on the
    same output tap (a full 2-D correlation, without a padded convolution)."""
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    products = later.permute(0, 2, 3, 1).reshape(o * a * a2, c) @ earlier.reshape(c, i * b * b2)
    products = products.reshape(o, a * a2, i, b * b2).transpose(1, 2).reshape(o, i, a * a2 * b * b2)
    out = products.new_zeros(o, i, (a + b - 1) * (a2 + b2 - 1))
    out = out.index_add(2, _tap_sum_index(later, earlier, products.device), products)
    return out.reshape(o, i, a + b - 1, a2 + b2 - 1)


def _fold_cost(shapes) -> Tuple[int, int]:
    """Multiply-adds of folding ``[(out, in, k)]`` left to right vs right to left."""
    def fold(seq, left_first):
        total, (o, i, k) = 0, seq[0]
        for o2, i2, k2 in seq[1:]:
            if left_first:  # (o2, o, k2) after (o, i, k)
                total += o2 * k2 * k2 * o * i * k * k
                o, k = o2, k + k2 - 1
            else:  # (o, i, k) before (o2, i2, k2): here seq is reversed
                total += o * k * k * i * i2 * k2 * k2
                i, k = i2, k + k2 - 1
        return total
    return fold(shapes, True), fold(shapes[::-1], False)


def compose_ck(weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]],
               fold: Callable[[Tensor, Tensor], Tensor] = None) -> Composed:
    """Fold a stack of 3x3 kernels into one, in the cheaper association order; biases fold with
    the spatial sum of every later kernel. ``fold(later, earlier)`` composes two kernels
    (default ``compose_two_kernels``; the Triton backend passes its kernel)."""
    fold = fold or compose_two_kernels
    shapes = [(w.shape[0], w.shape[1], w.shape[2]) for w in weights]
    left_cost, right_cost = _fold_cost(shapes)
    if left_cost <= right_cost:
        kernel = weights[0]
        for w in weights[1:]:
            kernel = fold(w, kernel)
    else:
        kernel = weights[-1]
        for w in reversed(weights[:-1]):
            kernel = fold(kernel, w)
    if biases is None:
        return kernel, None
    bias = biases[0]
    for w, b in zip(weights[1:], biases[1:]):
        bias = w.sum(dim=(2, 3)) @ bias + b
    return kernel, bias


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
