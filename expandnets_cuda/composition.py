"""Composition of expanded weights in plain PyTorch (the ``torch`` composer), with its own backward.

Each composer is an autograd Function that saves the expanded parameters (which exist anyway)
and, in backward, recomputes the weight-sized products it needs, choosing the multiplication
order by cost in both directions (``composition_products``). The one exception: a CK unit of three
or more kernels keeps its partial kernels from forward when they hold no more elements than its
weights and at most 1 MiB (``composition_products.ck_keeps_partials``), which spares backward all folds but the
last. So what the composition keeps between forward and backward is weight-sized at most, never
batch-sized (docs/design.md section 3). The backward is written in differentiable torch ops, so
double backward works too (it folds the partials again, differentiably).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import torch

from expandnets_cuda import composition_products as products
from expandnets_cuda.composition_products import cl_cost  # noqa: F401  (re-exported: tests and benchmarks read it)

Tensor = torch.Tensor
Composed = Tuple[Tensor, Optional[Tensor]]


class _ComposeCL(torch.autograd.Function):
    """``(W1 (g,a,i), W2 (g,c,a,t), W3 (g,o,c), b1, b2, b3 (g, .) or None) -> (W (g,o,i,t), b (g,o))``,
    or ``W`` alone without biases.

    The first bias rides along as one more input channel of ``W1`` (a constant input of value 1
    through ``b1``): the chain ``W3 W2 [W1 | b1]`` yields the composed weight and, summed over
    taps, ``W3 (sum_t W2) b1``; backward likewise gets ``db1`` and the bias terms of ``dW2`` from
    the same GEMMs. So no pass over the (large) ``W2`` is spent on the biases alone."""

    @staticmethod
    def forward(ctx, w1, w2, w3, b1, b2, b3):
        ctx.has_bias = b1 is not None
        ctx.save_for_backward(w1, w2, w3, b1, b2)  # views of the parameters only
        # Without biases the Function returns W alone: torch.compile fails on a None output.
        if not ctx.has_bias:
            return products.contiguous_output(products.cl_forward(w1, w2, w3))
        i = w1.shape[2]
        composed = products.cl_forward(products.with_bias_channel(w1, b1), w2, w3)  # (g, o, i+1, t)
        bias = composed[:, :, i].sum(dim=2) + torch.bmm(w3, b2.unsqueeze(2)).squeeze(2) + b3
        return products.contiguous_output(composed[:, :, :i]), bias  # a copy unless g = o = 1

    @staticmethod
    def backward(ctx, d_weight, d_bias=None):
        w1, w2, w3, b1, b2 = ctx.saved_tensors
        need_w1, need_w2, need_w3, need_b1, need_b2, need_b3 = ctx.needs_input_grad
        g, o, i, t = w3.shape[0], w3.shape[1], w1.shape[2], w2.shape[3]
        if d_weight is None:
            d_weight = w2.new_zeros(g, o, i, t)
        with_bias = ctx.has_bias and d_bias is not None
        if not with_bias:
            d1, d2, d3 = products.cl_backward(w1, w2, w3, d_weight, (need_w1, need_w2, need_w3))
            return d1, d2, d3, None, None, None
        d_all = torch.cat([d_weight, d_bias[:, :, None, None].expand(g, o, 1, t)], dim=2)
        d1x, d2, d3 = products.cl_backward(products.with_bias_channel(w1, b1), w2, w3, d_all,
                                           (need_w1 or need_b1, need_w2, need_w3))
        if d3 is not None:  # the b2 part of the bias after layer 2 (the b1 part came with the GEMM)
            d3 = d3 + d_bias.unsqueeze(2) * b2.unsqueeze(1)
        # Contiguous here, once per call: a strided slice would be copied by every parameter's
        # AccumulateGrad instead (one launch per unit of a network-composed group).
        d1 = d1x[:, :, :i].contiguous() if need_w1 else None
        db1 = d1x[:, :, i].contiguous() if need_b1 else None
        db2 = torch.bmm(w3.transpose(1, 2), d_bias.unsqueeze(2)).squeeze(2) if need_b2 else None
        return d1, d2, d3, db1, db2, (d_bias if need_b3 else None)


def compose_cl(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Tensor,
               b3: Optional[Tensor], groups: int) -> Composed:
    """``W[:, :, y, x] = W3 @ W2[:, :, y, x] @ W1`` per group, as batched GEMMs over all taps.

    Shapes: ``w1 (g*a, i, 1, 1)``, ``w2 (g*c, a, kh, kw)``, ``w3 (g*o, c, 1, 1)``; result
    ``(g*o, i, kh, kw)``. The order with fewer multiply-adds wins, forward and backward."""
    g = groups
    a, i = w1.shape[0] // g, w1.shape[1]
    c, _, kh, kw = w2.shape[0] // g, *w2.shape[1:]
    o = w3.shape[0] // g
    biases = (None, None, None) if b1 is None else (b1.reshape(g, a), b2.reshape(g, c), b3.reshape(g, o))
    out = _ComposeCL.apply(w1.reshape(g, a, i), w2.reshape(g, c, a, kh * kw), w3.reshape(g, o, c), *biases)
    weight, bias = out if b1 is not None else (out, None)
    return weight.reshape(g * o, i, kh, kw), (bias.reshape(g * o) if bias is not None else None)


def compose_fc(weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]]) -> Composed:
    """``W = W3 W2 W1`` in the cheaper order, ``b = W3 (W2 b1 + b2) + b3``: CL with one group and one tap."""
    w1, w2, w3 = weights
    b1, b2, b3 = biases if biases is not None else (None, None, None)
    weight, bias = compose_cl(w1.reshape(*w1.shape, 1, 1), b1, w2.reshape(*w2.shape, 1, 1), b2,
                              w3.reshape(*w3.shape, 1, 1), b3, 1)
    return weight.reshape(w3.shape[0], w1.shape[1]), bias


class Folds(NamedTuple):
    """A two-kernel fold and its backward: ``forward(later, earlier) -> K`` and
    ``backward(later, earlier, dK, need_later, need_earlier) -> (d later, d earlier)``."""

    forward: Callable
    backward: Callable


TORCH_FOLDS = Folds(products.fold_forward, products.fold_backward)


def kernel_folds(fold_op: Callable, fold_backward_op: Callable) -> Folds:
    """``Folds`` of a backend's ops ``fold(later, earlier)`` / ``fold_backward(dK, later, earlier)``."""
    def backward(later, earlier, dk, need_later=True, need_earlier=True):
        return fold_backward_op(dk, later, earlier)
    return Folds(fold_op, backward)


def _ck_partials(weights: Sequence[Tensor], left_first: bool, folds: Folds = TORCH_FOLDS):
    """The partial kernels each fold combines with a weight, indexed by layer: left to right
    ``K[0] = W_0, K[j] = fold(W_j, K[j-1])`` (j < L-1); right to left ``K[L-1] = W_{L-1},
    K[j] = fold(K[j+1], W_j)`` (j > 0). The composed kernel is one more fold."""
    n = len(weights)
    partial = {}
    if left_first:
        partial[0] = weights[0]
        for j in range(1, n - 1):
            partial[j] = folds.forward(weights[j], partial[j - 1])
    else:
        partial[n - 1] = weights[n - 1]
        for j in range(n - 2, 0, -1):
            partial[j] = folds.forward(partial[j + 1], weights[j])
    return partial


def _kept_partials(weights: Sequence[Tensor], partial: dict) -> list:
    """The folded partials backward needs beyond the weights, kept from forward when
    ``products.ck_keeps_partials`` says so; else backward folds them again."""
    if not products.ck_keeps_partials([tuple(w.shape) for w in weights]):
        return []
    return [partial[j] for j in range(1, len(weights) - 1)]  # either direction: the end weight is kept anyway


def _partials_from_kept(weights: Sequence[Tensor], kept: Sequence[Tensor], left_first: bool) -> dict:
    n = len(weights)
    partial = {j: kept[j - 1] for j in range(1, n - 1)}
    partial[0 if left_first else n - 1] = weights[0 if left_first else n - 1]
    return partial


def _ck_last_fold(weights: Sequence[Tensor], partial: dict, left_first: bool, folds: Folds = TORCH_FOLDS) -> Tensor:
    if left_first:
        kernel = folds.forward(weights[-1], partial[len(weights) - 2])
    else:
        kernel = folds.forward(partial[1], weights[0])
    # The folds hand back a channels-last view; the convolution saves this kernel and runs
    # best on the layout the compact one has, so give it a contiguous storage of its own.
    return products.contiguous_output(kernel)


def _ck_biases(weights: Sequence[Tensor], biases: Sequence[Tensor]):
    """Bias after each layer: ``bias_0 = b_0``, ``bias_j = (sum over taps of W_j) bias_{j-1} + b_j``."""
    out = [biases[0]]
    for w, b in zip(weights[1:], biases[1:]):
        out.append(products.tap_sum(w) @ out[-1] + b)
    return out


class _ComposeCK(torch.autograd.Function):
    """``(folds, n_layers, W_0..W_{L-1}, b_0..b_{L-1} or nothing) -> (K, b) or K``. Backward needs
    the partial kernels (all but the last fold): kept from forward where they are small
    (``products.ck_keeps_partials``), else folded again. ``folds``: the torch products or a backend's fold kernels."""

    @staticmethod
    def forward(ctx, folds, n_layers, *tensors):
        weights, biases = tensors[:n_layers], tensors[n_layers:]
        ctx.folds, ctx.n_layers, ctx.has_bias = folds, n_layers, len(biases) > 0
        ctx.left_first = products.ck_folds_left_first(weights)
        partial = _ck_partials(weights, ctx.left_first, folds)
        kernel = _ck_last_fold(weights, partial, ctx.left_first, folds)
        kept = _kept_partials(weights, partial)
        ctx.n_kept = len(kept)
        ctx.save_for_backward(*weights, *biases, *kept)
        if not ctx.has_bias:  # K alone: torch.compile fails on a None output
            return kernel
        return kernel, _ck_biases(weights, biases)[-1]

    @staticmethod
    def backward(ctx, d_kernel, d_bias=None):
        n, saved = ctx.n_layers, ctx.saved_tensors
        kept = saved[len(saved) - ctx.n_kept:]
        weights, biases = saved[:n], saved[n:len(saved) - ctx.n_kept]
        needs = ctx.needs_input_grad[2:]
        folds = ctx.folds
        d_weights = [None] * n
        if d_kernel is not None:
            fold_weights = weights
            if folds is TORCH_FOLDS and weights[0].device.type == "cpu":  # one taps-major copy each (CPU folds)
                fold_weights = [w.contiguous(memory_format=torch.channels_last) for w in weights]
            if kept and not torch.is_grad_enabled():  # a double backward recomputes them differentiably
                partial = _partials_from_kept(weights, kept, ctx.left_first)
            else:
                partial = _ck_partials(fold_weights, ctx.left_first, folds)
            grad = d_kernel
            if ctx.left_first:  # undo fold(W_j, K[j-1]) from the last one back
                for j in range(n - 1, 0, -1):
                    d_weights[j], grad = folds.backward(fold_weights[j], partial[j - 1], grad,
                                                                need_later=needs[j], need_earlier=j > 1 or needs[0])
                d_weights[0] = grad
            else:  # undo fold(K[j+1], W_j) from the first layer on
                for j in range(0, n - 1):
                    grad, d_weights[j] = folds.backward(partial[j + 1], fold_weights[j], grad,
                                                                need_later=j < n - 2 or needs[n - 1],
                                                                need_earlier=needs[j])
                d_weights[n - 1] = grad
            d_weights = [d.contiguous() if d is not None else None for d in d_weights]
        d_biases = [None] * n
        if ctx.has_bias and d_bias is not None:
            after = _ck_biases(weights, biases)
            grad = d_bias
            for j in range(n - 1, 0, -1):
                d_biases[j] = grad
                if needs[j]:  # bias_j depends on W_j through its tap sum: a rank-one term
                    rank_one = (grad.unsqueeze(1) * after[j - 1].unsqueeze(0))[:, :, None, None]
                    d_weights[j] = rank_one.expand_as(weights[j]) if d_weights[j] is None else d_weights[j] + rank_one
                grad = products.tap_sum(weights[j]).t() @ grad
            d_biases[0] = grad
        grads = d_weights + (d_biases if ctx.has_bias else [])
        return (None, None, *(d if need else None for d, need in zip(grads, needs)))


def compose_two_kernels(later: Tensor, earlier: Tensor) -> Tensor:
    """Kernel of ``conv(conv(x, earlier), later)`` (differentiable by autograd)."""
    return products.fold_forward(later, earlier)


def compose_ck(weights: Sequence[Tensor], biases: Optional[Sequence[Tensor]],
               fold: Callable[[Tensor, Tensor], Tensor] = None, fold_backward: Callable = None) -> Composed:
    """Fold a stack of 3x3 kernels into one, in the cheaper association order; biases fold with
    the spatial sum of every later kernel.

    Default: the torch products. ``fold(later, earlier)`` and ``fold_backward(dK, later, earlier)``:
    a backend's fold kernels (Triton, CUDA); with both, the same Function runs them (nothing but
    the parameters saved); with ``fold`` alone, the folds are chained under autograd."""
    if fold is None or fold_backward is not None:
        folds = TORCH_FOLDS if fold is None else kernel_folds(fold, fold_backward)
        if biases is None:
            return _ComposeCK.apply(folds, len(weights), *weights), None
        return _ComposeCK.apply(folds, len(weights), *weights, *biases)
    left_first = products.ck_folds_left_first(weights)
    if left_first:
        kernel = weights[0]
        for w in weights[1:]:
            kernel = fold(w, kernel)
    else:
        kernel = weights[-1]
        for w in reversed(weights[:-1]):
            kernel = fold(kernel, w)
    if biases is None:
        return kernel, None
    return kernel, _ck_biases(weights, biases)[-1]
