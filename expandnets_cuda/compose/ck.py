"""CK composition: a stack of 3x3 kernels folded into one kxk kernel, biases with them, and the backward."""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import torch

from expandnets_cuda.compose import Composed, products

Tensor = torch.Tensor


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
    # A fold may hand back a channels-last view; the convolution saves this kernel and runs
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
        if not ctx.has_bias:  # K alone: torch.compile fails on a None output
            ctx.save_for_backward(*weights, *kept)
            return kernel
        after = _ck_biases(weights, biases)
        # The biases after each layer but the last (vectors) are kept: backward's rank-one terms
        # read them, and forming them again would cost one more pass over every weight.
        ctx.save_for_backward(*weights, *biases, *kept, *after[:-1])
        return kernel, after[-1]

    @staticmethod
    def backward(ctx, d_kernel, d_bias=None):
        n, saved = ctx.n_layers, ctx.saved_tensors
        weights = saved[:n]
        biases = saved[n:2 * n] if ctx.has_bias else ()
        kept = saved[n + len(biases):n + len(biases) + ctx.n_kept]
        after = saved[n + len(biases) + ctx.n_kept:]
        needs = ctx.needs_input_grad[2:]
        folds = ctx.folds
        d_weights = [None] * n
        if d_kernel is not None:
            fold_weights = weights
            if folds is TORCH_FOLDS and weights[0].device.type == "cpu":  # one taps-major copy each (CPU folds)
                fold_weights = [w.contiguous(memory_format=torch.channels_last) for w in weights]
            if kept and not torch.is_grad_enabled():  # a double backward recomputes them differentiably
                partial = _partials_from_kept(weights, kept, ctx.left_first)
            else:  # from the weights as stored: oneDNN folds plain kernels 5-25% faster than channels-last ones
                partial = _ck_partials(weights, ctx.left_first, folds)
            end = 0 if ctx.left_first else n - 1
            partial[end] = fold_weights[end]  # the end weight is a partial too: its taps-major copy
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
        d_biases, rank_ones = [None] * n, [None] * n
        if ctx.has_bias and d_bias is not None:
            if torch.is_grad_enabled():  # a double backward: the kept biases carry no graph
                after = _ck_biases(weights, biases)
            grad = d_bias
            for j in range(n - 1, 0, -1):
                d_biases[j] = grad
                if needs[j]:  # bias_j depends on W_j through its tap sum: a rank-one term
                    rank_ones[j] = (grad.unsqueeze(1) * after[j - 1].unsqueeze(0))[:, :, None, None]
                grad = products.tap_sum(weights[j]).t() @ grad
            d_biases[0] = grad
        d_weights = [_plus_rank_one(d, r, w) for d, r, w in zip(d_weights, rank_ones, weights)]
        grads = d_weights + (d_biases if ctx.has_bias else [])
        return (None, None, *(d if need else None for d, need in zip(grads, needs)))


def _plus_rank_one(d: Optional[Tensor], rank_one: Optional[Tensor], weight: Tensor) -> Optional[Tensor]:
    """A weight's gradient from the folds (a view in any layout, or ``None``) plus its bias term
    (``(o, c, 1, 1)`` or ``None``), contiguous: one pass writes both (the sum into a fresh
    contiguous tensor), not a copy and then an add."""
    if rank_one is None:
        return d.contiguous() if d is not None else None
    if d is None:
        return rank_one.expand_as(weight)
    if torch.is_grad_enabled():  # a double backward: ``out=`` has no derivative
        return (d + rank_one).contiguous()
    return torch.add(d, rank_one, out=torch.empty(d.shape, dtype=d.dtype, device=d.device))


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
