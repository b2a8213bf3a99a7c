"""CL composition: ``W[:, :, y, x] = W3 @ W2[:, :, y, x] @ W1`` per group, and its backward."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch

from expandnets_cuda.compose import Composed, products

Tensor = torch.Tensor


class ClOperands(NamedTuple):
    """``cl``'s arguments in the shapes every CL product and kernel takes: ``w1 (g, a, i)``,
    ``w2 (g, c, a, t)`` (``t`` taps), ``w3 (g, o, c)``, biases ``(g, .)`` or all ``None``;
    ``weight_shape``: the composed ``(g*o, i, *taps)``."""

    w1: Tensor
    w2: Tensor
    w3: Tensor
    b1: Optional[Tensor]
    b2: Optional[Tensor]
    b3: Optional[Tensor]
    weight_shape: Tuple[int, ...]


def cl_operands(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Tensor,
                b3: Optional[Tensor], groups: int, contiguous: bool = False) -> ClOperands:
    """``w1 (g*a, i, 1, 1)``, ``w2 (g*c, a, *taps)``, ``w3 (g*o, c, 1, 1)`` (FC: 2-D, one tap) as
    grouped matrices. Views where the tensors allow; ``contiguous`` for kernels that need it
    (still views, so pointers stay, when the parameters are contiguous)."""
    g = groups
    a, i = w1.shape[0] // g, w1.shape[1]
    c, taps = w2.shape[0] // g, tuple(w2.shape[2:])
    o = w3.shape[0] // g
    shaped = [w1.reshape(g, a, i), w2.reshape(g, c, a, math.prod(taps)), w3.reshape(g, o, c)]
    shaped += [None] * 3 if b1 is None else [b1.reshape(g, a), b2.reshape(g, c), b3.reshape(g, o)]
    if contiguous:
        shaped = [x.contiguous() if x is not None else None for x in shaped]
    return ClOperands(*shaped, (g * o, i, *taps))


class _ComposeCL(torch.autograd.Function):
    """``(W1 (g,a,i), W2 (g,c,a,t), W3 (g,o,c), b1, b2, b3 (g, .) or None) -> (W (g,o,i,t), b (g,o))``,
    or ``W`` alone without biases.

    The biases fold through ``W2``'s tap sums ``S = sum_t W2 (g, c, a)``: ``b = W3 (S b1 + b2) + b3``,
    matrix-vector products after one pass over ``W2`` (none with one tap: ``S`` is ``W2``); ``S`` is
    saved (weight-sized over ``c*a`` only) for backward, where the biases add vector products and a
    rank-one term to ``dW2``'s and ``dW3``'s GEMMs. So every weight-sized GEMM keeps the widths of
    the weights: carrying ``b1`` as one more input channel of ``W1`` instead made them odd-width
    (``i + 1`` columns), 30-40% slower per GEMM on CPU at SmallNet k=7's r=4 and r=8 units."""

    @staticmethod
    def forward(ctx, w1, w2, w3, b1, b2, b3):
        ctx.has_bias = b1 is not None
        weight, name, intermediate = products.cl_forward(w1, w2, w3)
        weight = products.contiguous_output(weight)
        g, c, a, t = w2.shape
        ctx.kept = products.cl_kept_intermediate(w1.shape[2], a, c, w3.shape[1], t, g)
        kept = [intermediate] if ctx.kept is not None else []
        # Without biases the Function returns W alone: torch.compile fails on a None output.
        if not ctx.has_bias:
            ctx.save_for_backward(w1, w2, w3, *kept)  # views of the parameters, and a small intermediate
            return weight
        w2_taps = products.cl_tap_sums(w2)
        inner = _bias_inner(w2_taps, b1, b2)
        bias = torch.bmm(w3, inner.unsqueeze(2)).squeeze(2) + b3
        ctx.save_for_backward(w1, w2, w3, *kept, b1, b2, w2_taps)
        return weight, bias

    @staticmethod
    def backward(ctx, d_weight, d_bias=None):
        saved = ctx.saved_tensors
        w1, w2, w3 = saved[:3]
        kept = None
        if ctx.kept is not None:
            # A double backward forms it again: the saved one carries no graph to the weights.
            kept = None if torch.is_grad_enabled() else (ctx.kept, saved[3])
            saved = saved[:3] + saved[4:]
        need_w1, need_w2, need_w3, need_b1, need_b2, need_b3 = ctx.needs_input_grad
        g, o, i, t = w3.shape[0], w3.shape[1], w1.shape[2], w2.shape[3]
        if d_weight is None:
            d_weight = w2.new_zeros(g, o, i, t)
        if not ctx.has_bias or d_bias is None:
            d1, d2, d3 = products.cl_backward(w1, w2, w3, d_weight, (need_w1, need_w2, need_w3), kept=kept)
            return d1, d2, d3, None, None, None
        b1, b2, w2_taps = saved[3:]
        if torch.is_grad_enabled():  # likewise the tap sums
            w2_taps = products.cl_tap_sums(w2)
        d_inner, db1 = _bias_fold_vectors(d_bias, w2_taps, w3)
        # dW2 gains d_inner b1^T on every tap, added by the GEMM that writes it (no pass of its own).
        d1, d2, d3 = products.cl_backward(w1, w2, w3, d_weight, (need_w1, need_w2, need_w3),
                                          dw2_rank_one=(d_inner, b1), kept=kept)
        if need_w3:
            d3 = torch.baddbmm(d3, d_bias.unsqueeze(2), _bias_inner(w2_taps, b1, b2).unsqueeze(1))
        return (d1, d2, d3, db1 if need_b1 else None, d_inner if need_b2 else None, d_bias if need_b3 else None)


def compose_cl(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Tensor,
               b3: Optional[Tensor], groups: int) -> Composed:
    """``W[:, :, y, x] = W3 @ W2[:, :, y, x] @ W1`` per group, as batched GEMMs over all taps.

    Shapes: ``w1 (g*a, i, 1, 1)``, ``w2 (g*c, a, kh, kw)``, ``w3 (g*o, c, 1, 1)``; result
    ``(g*o, i, kh, kw)``. The order with fewer multiply-adds wins, forward and backward."""
    ops = cl_operands(w1, b1, w2, b2, w3, b3, groups)
    out = _ComposeCL.apply(*ops[:6])
    weight, bias = out if b1 is not None else (out, None)
    return weight.reshape(ops.weight_shape), (bias.reshape(-1) if bias is not None else None)


def cl_bias_fold_backward(grad: Tensor, w2: Tensor, w3: Tensor, b1: Tensor, b2: Tensor):
    """Gradients of the kernels' bias fold ``b = W3 (tap_sum(W2) b1 + b2) + b3`` (per group:
    ``w2 (g, c, a, t)``, ``w3 (g, o, c)``, ``b1 (g, a)``, ``b2 (g, c)``, ``grad (g, o)``) for
    ``(w2, w3, b1, b2, b3)``: rank-1 updates and matrix-vector products of vector size, so the
    Triton and CUDA bias-fold ops share this backward rather than run a kernel of their own."""
    w2_taps = products.cl_tap_sums(w2)
    d_inner, d_b1 = _bias_fold_vectors(grad, w2_taps, w3)
    d_w3 = grad.unsqueeze(2) * _bias_inner(w2_taps, b1, b2).unsqueeze(1)
    d_w2 = (d_inner.unsqueeze(2) * b1.unsqueeze(1)).unsqueeze(3).expand_as(w2)
    return d_w2, d_w3, d_b1, d_inner, grad


def _bias_inner(w2_taps: Tensor, b1: Tensor, b2: Tensor) -> Tensor:
    """The bias after the second layer, ``tap_sum(W2) b1 + b2`` (per group: ``(g, c)``)."""
    return torch.bmm(w2_taps, b1.unsqueeze(2)).squeeze(2) + b2


def _bias_fold_vectors(grad: Tensor, w2_taps: Tensor, w3: Tensor):
    """The vector-sized parts of the bias fold's backward: ``d inner`` (= ``db2``) and ``db1``
    (per group; ``w2_taps (g, c, a)``)."""
    d_inner = torch.bmm(w3.transpose(1, 2), grad.unsqueeze(2)).squeeze(2)  # (g, c)
    d_b1 = torch.bmm(w2_taps.transpose(1, 2), d_inner.unsqueeze(2)).squeeze(2)
    return d_inner, d_b1
