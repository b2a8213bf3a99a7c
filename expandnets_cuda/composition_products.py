"""The weight-sized products of the torch composer, forward and backward, and the cost model that
picks the multiplication order of each (DESIGN.md sections 2-3).

Layouts follow the parameters' storage, so no product has to copy the largest tensor ``W2``:
CL per group ``W1 (g, a, i)``, ``W2 (g, c, a, t)`` (t = kernel taps, last), ``W3 (g, o, c)``,
composed ``W (g, o, i, t)``. CK kernels are plain ``(out, in, kh, kw)``.
Everything here is plain tensor algebra; ``composition`` wraps it in autograd Functions.
"""
from __future__ import annotations

import itertools
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------- CL / FC
# Below this many taps a per-tap batched GEMM is too small to run well; transposing the tap
# dimension out of the way and running one large GEMM wins instead (measured on CPU, fwd+bwd).
MIN_TAPS_PER_GEMM = 16


def left_mul_taps(m: Tensor, x: Tensor) -> Tensor:
    """``out[g, n, p, t] = sum_q m[g, p, q] x[g, n, q, t]`` for ``m (g, p, q)``, ``x (g, n, q, t)``."""
    g, n, q, t = x.shape
    if t >= MIN_TAPS_PER_GEMM:
        return torch.matmul(m.unsqueeze(1), x)
    flat = torch.bmm(x.transpose(2, 3).reshape(g, n * t, q), m.transpose(1, 2))  # (g, n*t, p)
    return flat.reshape(g, n, t, m.shape[1]).transpose(2, 3)


def contract_channels_and_taps(x: Tensor, y: Tensor) -> Tensor:
    """``out[g, a, i] = sum_{c, t} x[g, c, a, t] y[g, c, i, t]``.

    Either one GEMM per channel ``c`` summed afterwards (no copy of ``x``, a transient of
    ``c*a*i``) or one large GEMM over ``(c, t)`` after moving ``a`` to the front (a copy of ``x``,
    free when ``t == 1``); the smaller transient wins."""
    g, c, a, t = x.shape
    i = y.shape[2]
    if t > 1 and i <= t:
        return torch.matmul(x, y.transpose(2, 3)).sum(dim=1)
    return torch.bmm(x.permute(0, 2, 1, 3).reshape(g, a, c * t), y.permute(0, 1, 3, 2).reshape(g, c * t, i))


def cl_cost(m_g: int, a: int, c: int, o: int, taps: int, groups: int):
    """Multiply-adds of the two CL forward orders: ``((W3 W2) W1, W3 (W2 W1))``, per group and tap."""
    return (groups * taps * (o * c * a + o * a * m_g), groups * taps * (c * a * m_g + o * c * m_g))


def cl_forward(w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    """Composed ``W (g, o, i, t)`` in the cheaper order (ties: W3 first, as the kernels do)."""
    g, c, a, t = w2.shape
    o, i = w3.shape[1], w1.shape[2]
    cost_w3_first, cost_w1_first = cl_cost(i, a, c, o, t, 1)
    if cost_w3_first <= cost_w1_first:
        p = torch.bmm(w3, w2.reshape(g, c, a * t)).reshape(g, o, a, t)
        return left_mul_taps(w1.transpose(1, 2), p)
    r = left_mul_taps(w1.transpose(1, 2), w2)
    return torch.bmm(w3, r.reshape(g, c, i * t)).reshape(g, o, i, t)


class CLBackwardPlan(NamedTuple):
    """Which intermediate each gradient is computed from: ``dW2`` from ``Q = W3^T dW`` or
    ``Q' = dW W1^T``; ``dW1`` from ``Q`` or ``P = W3 W2``; ``dW3`` from ``R = W2 W1`` or ``Q'``."""

    dw2: str
    dw1: str
    dw3: str
    cost: int


def cl_backward_plans(i: int, a: int, c: int, o: int, t: int):
    """All eight ways to form ``dW1, dW2, dW3``, with their multiply-adds per group, counting
    each intermediate once. Nothing is saved by the forward, so ``R`` / ``P`` are recomputed
    when a plan needs them."""
    made = {"Q": c * o * i * t, "Qp": o * i * a * t, "P": o * c * a * t, "R": c * a * i * t}
    options = {"dw2": {"Q": c * i * a * t, "Qp": c * o * a * t},
               "dw1": {"Q": a * c * t * i, "P": a * o * t * i},
               "dw3": {"R": o * c * i * t, "Qp": o * c * a * t}}
    return [CLBackwardPlan(dw2, dw1, dw3, options["dw2"][dw2] + options["dw1"][dw1] + options["dw3"][dw3]
                           + sum(made[name] for name in {dw2, dw1, dw3}))
            for dw2, dw1, dw3 in itertools.product(options["dw2"], options["dw1"], options["dw3"])]


_PLANS: Dict[Tuple[int, ...], CLBackwardPlan] = {}  # a plain dict: torch.compile reads it as a constant


def cl_backward_plan(i: int, a: int, c: int, o: int, t: int) -> CLBackwardPlan:
    """The cheapest of the eight ways to form ``dW1, dW2, dW3`` (multiply-adds per group),
    counting each intermediate once (first found wins a tie); chosen once per shape."""
    key = (i, a, c, o, t)
    plan = _PLANS.get(key)
    if plan is None:
        plan = min(cl_backward_plans(i, a, c, o, t), key=lambda plan: plan.cost)
        if not torch.compiler.is_compiling():  # a traced Function may not write to outer state
            _PLANS[key] = plan
    return plan


def cl_backward(w1: Tensor, w2: Tensor, w3: Tensor, dw: Tensor, needs: Sequence[bool],
                plan: Optional[CLBackwardPlan] = None):
    """``(dW1, dW2, dW3)`` from the composed weight's gradient ``dw (g, o, i, t)``; ``None``
    where ``needs`` is false. ``plan``: default the cheapest (``cl_backward_plan``)."""
    g, c, a, t = w2.shape
    o, i = w3.shape[1], w1.shape[2]
    plan = plan or cl_backward_plan(i, a, c, o, t)
    dw = dw.contiguous()
    lazy = {"Q": lambda: torch.bmm(w3.transpose(1, 2), dw.reshape(g, o, i * t)).reshape(g, c, i, t),
            "Qp": lambda: left_mul_taps(w1, dw),                                     # (g, o, a, t)
            "P": lambda: torch.bmm(w3, w2.reshape(g, c, a * t)).reshape(g, o, a, t),
            "R": lambda: left_mul_taps(w1.transpose(1, 2), w2)}                       # (g, c, i, t)
    made: Dict[str, Tensor] = {}

    def get(name: str) -> Tensor:
        if name not in made:
            made[name] = lazy[name]()
        return made[name]

    need1, need2, need3 = needs
    d1 = d2 = d3 = None
    if need2:
        if plan.dw2 == "Q":
            d2 = left_mul_taps(w1, get("Q"))
        else:
            d2 = torch.bmm(w3.transpose(1, 2), get("Qp").reshape(g, o, a * t)).reshape(g, c, a, t)
    if need1:
        d1 = contract_channels_and_taps(w2, get("Q")) if plan.dw1 == "Q" else contract_channels_and_taps(get("P"), dw)
    if need3:
        if plan.dw3 == "R":
            d3 = torch.bmm(dw.reshape(g, o, i * t), get("R").reshape(g, c, i * t).transpose(1, 2))
        else:
            d3 = torch.bmm(get("Qp").reshape(g, o, a * t), w2.reshape(g, c, a * t).transpose(1, 2))
    return d1, d2, d3


def with_bias_channel(w1: Tensor, b1: Tensor) -> Tensor:
    """``[W1 | b1]`` ``(g, a, i+1)``: the first bias as the weight of a constant input channel."""
    return torch.cat([w1, b1.unsqueeze(2)], dim=2)


# ---------------------------------------------------------------------------------- CK
def fold_forward(later: Tensor, earlier: Tensor) -> Tensor:
    """Kernel of ``conv(conv(x, earlier), later)``: ``K[o, i, u+v] = sum_c later[o,c,v] earlier[c,i,u]``.

    One GEMM forms every (v, u) tap product; ``F.fold`` (col2im) then adds each later tap's
    block of products onto the window of output taps it shifts to (a full 2-D correlation)."""
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    products = later.permute(0, 2, 3, 1).reshape(o * a * a2, c) @ earlier.reshape(c, i * b * b2)
    columns = products.reshape(o, a * a2, i * b * b2).transpose(1, 2)  # (o, i*U, V): one column per later tap
    return F.fold(columns, (a + b - 1, a2 + b2 - 1), (b, b2))


def fold_backward(later: Tensor, earlier: Tensor, dk: Tensor, need_later: bool = True,
                  need_earlier: bool = True):
    """``(d later, d earlier)`` of ``fold_forward`` from the folded kernel's gradient ``dk``:
    ``F.unfold`` gathers each (v, u) pair's gradient (the transpose of col2im), then the two
    GEMMs of the forward's one."""
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    d_columns = F.unfold(dk, (b, b2))  # (o, i*U, V)
    d_products = d_columns.transpose(1, 2).reshape(o * a * a2, i * b * b2)
    d_later = d_earlier = None
    if need_later:
        d_later = (d_products @ earlier.reshape(c, i * b * b2).t()).reshape(o, a, a2, c).permute(0, 3, 1, 2)
    if need_earlier:
        d_earlier = (later.permute(0, 2, 3, 1).reshape(o * a * a2, c).t() @ d_products).reshape(c, i, b, b2)
    return d_later, d_earlier


def fold_cost(shapes) -> Tuple[int, int]:
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


def ck_folds_left_first(weights: Sequence[Tensor]) -> bool:
    left_cost, right_cost = fold_cost([(w.shape[0], w.shape[1], w.shape[2]) for w in weights])
    return left_cost <= right_cost
