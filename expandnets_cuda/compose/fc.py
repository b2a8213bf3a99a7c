"""FC composition: ``W = W3 W2 W1``, ``b = W3 (W2 b1 + b2) + b3``: CL with one group and one tap.

``fc_through_cl``: one definition for the kernel composers (each passes its own ``cl``).
``compose_fc``: the torch composer's, the same products and plans as CL (``products``) written on
the 2-D matrices themselves, because here the cost is the calls: a SmallNet classifier's 64 -> 10
unit at r=4 is ~0.6 M multiply-adds, and through the batched CL path (views to ``(g, ., ., t)``,
layout objects, rank-one terms as broadcasts) it ran 0.33-0.37 ms per step against 0.19-0.22 here.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from expandnets_cuda.compose import Composed, products

Tensor = torch.Tensor


def fc_through_cl(cl: Callable, weights: Sequence[torch.Tensor],
                  biases: Optional[Sequence[torch.Tensor]]) -> Composed:
    """The three Linear layers' ``(weights, biases)`` composed by ``cl`` (a composer's CL)."""
    w1, w2, w3 = weights
    b1, b2, b3 = biases if biases is not None else (None, None, None)
    weight, bias = cl(w1.reshape(*w1.shape, 1, 1), b1, w2.reshape(*w2.shape, 1, 1), b2,
                      w3.reshape(*w3.shape, 1, 1), b3, 1)
    return weight.reshape(w3.shape[0], w1.shape[1]), bias


def _shape(w1: Tensor, w2: Tensor, w3: Tensor):
    """``(i, a, c, o)`` of ``w1 (a, i)``, ``w2 (c, a)``, ``w3 (o, c)``."""
    return w1.shape[1], w1.shape[0], w2.shape[0], w3.shape[0]


class _ComposeFC(torch.autograd.Function):
    """``(W1, W2, W3, b1, b2, b3 or None) -> (W, b)``, or ``W`` alone without biases. The forward
    forms ``P = W3 W2`` or ``R = W2 W1`` (the cheaper order) and keeps it for backward when
    ``products.cl_kept_intermediate`` says so; backward follows ``products.cl_backward_plan``,
    the biases adding matrix-vector products and rank-one updates (``addr_``)."""

    @staticmethod
    def forward(ctx, w1, w2, w3, b1, b2, b3):
        i, a, c, o = _shape(w1, w2, w3)
        if products.cl_forward_intermediate(i, a, c, o, 1) == "P":
            name, mid = "P", w3 @ w2
            weight = mid @ w1
        else:
            name, mid = "R", w2 @ w1
            weight = w3 @ mid
        ctx.kept = products.cl_kept_intermediate(i, a, c, o, 1)
        ctx.has_bias = b1 is not None
        kept = [mid] if ctx.kept == name else []
        if not ctx.has_bias:  # W alone: torch.compile fails on a None output
            ctx.save_for_backward(w1, w2, w3, *kept)
            return weight
        inner = torch.addmv(b2, w2, b1)
        ctx.save_for_backward(w1, w2, w3, *kept, b1, b2, inner)  # inner: c values
        return weight, torch.addmv(b3, w3, inner)

    @staticmethod
    def backward(ctx, d_weight, d_bias=None):
        saved = list(ctx.saved_tensors)
        w1, w2, w3 = saved[:3]
        i, a, c, o = _shape(w1, w2, w3)
        made = {}
        if ctx.kept is not None:
            kept = saved.pop(3)
            if not torch.is_grad_enabled():  # a double backward forms it again, with its graph
                made[ctx.kept] = kept
        need1, need2, need3, need_b1, need_b2, need_b3 = ctx.needs_input_grad
        if d_weight is None:
            d_weight = w1.new_zeros(o, i)
        plan = products.cl_backward_plan(i, a, c, o, 1, ctx.kept)
        lazy = {"Q": lambda: w3.t() @ d_weight, "Qp": lambda: d_weight @ w1.t(),
                "P": lambda: w3 @ w2, "R": lambda: w2 @ w1}

        def get(name: str) -> Tensor:
            if name not in made:
                made[name] = lazy[name]()
            return made[name]

        d1 = d2 = d3 = db1 = d_inner = None
        if need2:
            d2 = get("Q") @ w1.t() if plan.dw2 == "Q" else w3.t() @ get("Qp")
        if need1:
            d1 = w2.t() @ get("Q") if plan.dw1 == "Q" else get("P").t() @ d_weight
        if need3:
            d3 = d_weight @ get("R").t() if plan.dw3 == "R" else get("Qp") @ w2.t()
        with_bias = ctx.has_bias and d_bias is not None
        if with_bias:
            b1, b2, inner = saved[3:]
            if torch.is_grad_enabled():  # a double backward: with its graph to W2, b1, b2
                inner = torch.addmv(b2, w2, b1)
            d_inner = w3.t() @ d_bias
            db1 = w2.t() @ d_inner if need_b1 else None
            if need2:  # b2 + W2 b1 depends on W2 through b1: a rank-one term
                d2 = _add_outer(d2, d_inner, b1)
            if need3:
                d3 = _add_outer(d3, d_bias, inner)
        return (d1, d2, d3, db1, d_inner if with_bias and need_b2 else None,
                d_bias if with_bias and need_b3 else None)


def _add_outer(m: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``m + u v^T``: in place on a fresh product, out of place under a double backward (where
    ``m`` is part of the graph)."""
    return torch.addr(m, u, v) if torch.is_grad_enabled() else m.addr_(u, v)


def compose_fc(weights: Sequence[torch.Tensor], biases: Optional[Sequence[torch.Tensor]]) -> Composed:
    """The torch composer's FC: ``(W, b)`` of the three Linear layers (the cheaper product order,
    forward and backward, as for CL)."""
    w1, w2, w3 = weights
    if biases is None:
        return _ComposeFC.apply(w1, w2, w3, None, None, None), None
    return _ComposeFC.apply(w1, w2, w3, *biases)
