"""The weight-sized products of the torch composer, forward and backward, and the cost model that
picks the multiplication order of each (docs/design.md sections 2-3).

CL per group ``W1 (g, a, i)``, ``W2 (g, c, a, t)`` (t = kernel taps), ``W3 (g, o, c)``, composed
``W (g, o, i, t)``; ``cl_gemms`` runs each product as large GEMMs in the layout ``W2`` is stored
in. CK kernels are plain ``(out, in, kh, kw)``.
Everything here is plain tensor algebra; ``composition`` wraps it in autograd Functions.
"""
from __future__ import annotations

import itertools
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from expandnets_cuda import caches
from expandnets_cuda.compose import cl_gemms

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------- CL / FC
def cl_cost(m_g: int, a: int, c: int, o: int, taps: int, groups: int):
    """Multiply-adds of the two CL forward orders: ``((W3 W2) W1, W3 (W2 W1))``, per group and tap."""
    return (groups * taps * (o * c * a + o * a * m_g), groups * taps * (c * a * m_g + o * c * m_g))


def cl_forward_intermediate(i: int, a: int, c: int, o: int, t: int) -> str:
    """Which product the forward forms first: ``"P"`` (``W3 W2``) or ``"R"`` (``W2 W1``), the
    cheaper order (ties: W3 first, as the kernels do)."""
    cost_w3_first, cost_w1_first = cl_cost(i, a, c, o, t, 1)
    return "P" if cost_w3_first <= cost_w1_first else "R"


def cl_forward(w1: Tensor, w2: Tensor, w3: Tensor) -> Tuple[Tensor, str, Tensor]:
    """Composed ``W (g, o, i, t)`` in the cheaper order, with the intermediate it made on the way
    (``("P", W3 W2)`` or ``("R", W2 W1)``, in ``cl_gemms``' layout). ``W`` may be a transposed
    view (the caller copies the part it keeps once)."""
    g, c, a, t = w2.shape
    gemms = cl_gemms.layout_for(w1, w2, w3)
    name = cl_forward_intermediate(w1.shape[2], a, c, w3.shape[1], t)
    if name == "P":
        p = gemms.p()
        return gemms.weight_from_p(p), name, p
    r = gemms.r()
    return gemms.weight_from_r(r), name, r


# A CL unit keeps its forward's intermediate for backward (instead of forming it again there) when
# the backward plan reads it and it has at most this many elements (512 KiB in float32): the saved
# state stays weight-sized and small, and the large units (whose intermediate would weigh as much as
# a share of the activations) recompute. Measured on CPU: a SmallNet FC unit at r=4 (P, 64 x 1024)
# skips one of its seven GEMMs.
KEEP_INTERMEDIATE_MAX_ELEMENTS = 1 << 17


def cl_kept_intermediate(i: int, a: int, c: int, o: int, t: int, groups: int = 1) -> Optional[str]:
    """The intermediate (``"P"``/``"R"``) a CL unit keeps from forward to backward, or ``None``."""
    name = cl_forward_intermediate(i, a, c, o, t)
    if groups * (o * a * t if name == "P" else c * t * i) > KEEP_INTERMEDIATE_MAX_ELEMENTS:
        return None
    plan = cl_backward_plan(i, a, c, o, t, kept=name)
    return name if name in (plan.dw2, plan.dw1, plan.dw3) else None


class CLBackwardPlan(NamedTuple):
    """Which intermediate each gradient is computed from: ``dW2`` from ``Q = W3^T dW`` or
    ``Q' = dW W1^T``; ``dW1`` from ``Q`` or ``P = W3 W2``; ``dW3`` from ``R = W2 W1`` or ``Q'``."""

    dw2: str
    dw1: str
    dw3: str
    cost: int


def cl_backward_plans(i: int, a: int, c: int, o: int, t: int, kept: Optional[str] = None):
    """All eight ways to form ``dW1, dW2, dW3``, with their multiply-adds per group, counting
    each intermediate once. ``R`` / ``P`` are formed again when a plan needs them, but for the one
    ``kept`` from forward (free)."""
    made = {"Q": c * o * i * t, "Qp": o * i * a * t, "P": o * c * a * t, "R": c * a * i * t}
    if kept is not None:
        made[kept] = 0
    options = {"dw2": {"Q": c * i * a * t, "Qp": c * o * a * t},
               "dw1": {"Q": a * c * t * i, "P": a * o * t * i},
               "dw3": {"R": o * c * i * t, "Qp": o * c * a * t}}
    return [CLBackwardPlan(dw2, dw1, dw3, options["dw2"][dw2] + options["dw1"][dw1] + options["dw3"][dw3]
                           + sum(made[name] for name in {dw2, dw1, dw3}))
            for dw2, dw1, dw3 in itertools.product(options["dw2"], options["dw1"], options["dw3"])]


# A plain dict: torch.compile reads it as a constant. Bounded (caches.PLAN_CACHE_SIZE, oldest dropped).
_PLANS: Dict[Tuple[int, ...], CLBackwardPlan] = {}


def cl_backward_plan(i: int, a: int, c: int, o: int, t: int, kept: Optional[str] = None) -> CLBackwardPlan:
    """The cheapest of the eight ways to form ``dW1, dW2, dW3`` (multiply-adds per group),
    counting each intermediate once (first found wins a tie); chosen once per shape."""
    key = (i, a, c, o, t, kept)
    plan = _PLANS.get(key)
    if plan is None:
        plan = min(cl_backward_plans(i, a, c, o, t, kept), key=lambda plan: plan.cost)
        if not torch.compiler.is_compiling():  # a traced Function may not write to outer state
            caches.remember(_PLANS, key, plan, caches.PLAN_CACHE_SIZE)
    return plan


def cl_backward(w1: Tensor, w2: Tensor, w3: Tensor, dw: Tensor, needs: Sequence[bool],
                plan: Optional[CLBackwardPlan] = None, dw2_rank_one: Optional[Tuple[Tensor, Tensor]] = None,
                kept: Optional[Tuple[str, Tensor]] = None):
    """``(dW1, dW2, dW3)`` from the composed weight's gradient ``dw (g, o, i, t)``; ``None``
    where ``needs`` is false. ``plan``: default the cheapest (``cl_backward_plan``). ``dW2`` comes
    in ``w2``'s own layout where the products allow it (``cl_gemms``). ``dw2_rank_one = (u (g, c),
    v (g, a))``: ``u v^T`` added to every tap of ``dW2`` (the biases' term), by the GEMM that
    writes ``dW2`` where it can. ``kept = (name, tensor)``: the intermediate ``cl_forward`` made, if
    it was kept (then the plan takes it for free)."""
    g, c, a, t = w2.shape
    o, i = w3.shape[1], w1.shape[2]
    plan = plan or cl_backward_plan(i, a, c, o, t, kept[0] if kept is not None else None)
    gemms = cl_gemms.layout_for(w1, w2, w3)
    dw_ti = gemms.taps_inner(dw)
    lazy = {"Q": lambda: gemms.q(dw_ti), "Qp": lambda: gemms.qp(dw, dw_ti), "P": gemms.p, "R": gemms.r}
    made: Dict[str, Tensor] = dict([kept]) if kept is not None else {}

    def get(name: str) -> Tensor:
        if name not in made:
            made[name] = lazy[name]()
        return made[name]

    need1, need2, need3 = needs
    d1 = d2 = d3 = None
    if need2:
        d2 = (gemms.dw2_from_q(get("Q"), dw2_rank_one) if plan.dw2 == "Q"
              else gemms.dw2_from_qp(get("Qp"), dw2_rank_one))
    if need1:
        d1 = gemms.dw1_from_q(get("Q")) if plan.dw1 == "Q" else gemms.dw1_from_p(get("P"), dw, dw_ti)
    if need3:
        d3 = gemms.dw3_from_r(dw_ti, get("R")) if plan.dw3 == "R" else gemms.dw3_from_qp(get("Qp"))
    return d1, d2, d3


def cl_tap_sums(w2: Tensor) -> Tensor:
    """``sum_t W2 (g, c, a)`` of ``w2 (g, c, a, t)`` (what the biases fold through): a view with
    one tap, a GEMV over a contiguous ``W2`` (one pass over it), else a reduction."""
    g, c, a, t = w2.shape
    if t == 1:
        return w2[:, :, :, 0]
    if w2.is_contiguous():
        return tap_sum(w2.reshape(g * c, a, t, 1)).reshape(g, c, a)
    return w2.sum(dim=3)


# ---------------------------------------------------------------------------------- CK
def _later_taps_outer(later: Tensor, earlier: Tensor) -> bool:
    """The forward's block adds shift blocks per tap of whichever kernel has fewer taps (fewer,
    larger strided adds)."""
    return later.shape[2] * later.shape[3] <= earlier.shape[2] * earlier.shape[3]


def _taps_major(k: Tensor) -> Tensor:
    """A kernel ``(o, i, kh, kw)`` as ``(o, kh, kw, i)`` contiguous: a view of a channels-last one
    (what the GEMM fold returns), a copy otherwise."""
    return k.permute(0, 2, 3, 1).contiguous()


def fold_forward(later: Tensor, earlier: Tensor) -> Tensor:
    """Kernel of ``conv(conv(x, earlier), later)``: ``K[o, i, v+u] = sum_c later[o,c,v] earlier[c,i,u]``.

    One GEMM forms every (v, u) tap product; each tap of the kernel with fewer taps then adds its
    block of products onto the window of output taps it shifts to (a full 2-D correlation).
    Everything is taps-major (input channels innermost), so each block add runs over rows of
    ``kw * i`` contiguous values; on a CPU this replaces ``F.fold`` (col2im), which loops over the
    ``o`` images of a transposed copy and cost more than the GEMM (elsewhere col2im is one launch
    and stays). Returns a channels-last view on a CPU. Where oneDNN has the dtype
    (``ONEDNN_FOLD_DTYPES``) one convolution replaces both steps (``_fold_forward_conv``)."""
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    if later.device.type != "cpu":
        return _fold_forward_col2im(later, earlier)
    if torch.compiler.is_compiling():  # Inductor lowers the block adds into a slow generated loop
        return _fold_forward_transposed_conv(later, earlier)
    if _onednn_folds(later):
        return _fold_forward_conv(later, earlier)
    products = _taps_major(later).reshape(o * a * a2, c) @ _taps_major(earlier).reshape(c, b * b2 * i)
    products = products.reshape(o, a, a2, b, b2, i)
    kernel = products.new_zeros(o, a + b - 1, a2 + b2 - 1, i)
    if _later_taps_outer(later, earlier):
        for y in range(a):
            for x in range(a2):
                kernel[:, y:y + b, x:x + b2] += products[:, y, x]
    else:
        for y in range(b):
            for x in range(b2):
                kernel[:, y:y + a, x:x + a2] += products[:, :, :, y, x]
    return kernel.permute(0, 3, 1, 2)


def fold_backward(later: Tensor, earlier: Tensor, dk: Tensor, need_later: bool = True,
                  need_earlier: bool = True):
    """``(d later, d earlier)`` of ``fold_forward`` from the folded kernel's gradient ``dk``: each
    (v, u) pair's gradient is the window of ``dk`` at ``v + u`` (one stack of shifted windows, the
    transpose of the forward's block adds), then the two GEMMs of the forward's one. Both come
    as channels-last views."""
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    if later.device.type != "cpu":
        return _fold_backward_im2col(later, earlier, dk, need_later, need_earlier)
    # d_products[o, v, u, i] = dk[o, v + u, i]: the windows of dk as a strided view (two unfolds),
    # copied once into GEMM rows (2.5-3x faster than stacking one slice per tap, and 4 ops, not ~20).
    windows = _taps_major(dk).unfold(1, b, 1).unfold(2, b2, 1)  # (o, a, a2, i, b, b2)
    d_products = windows.permute(0, 1, 2, 4, 5, 3).reshape(o * a * a2, b * b2 * i)
    d_later = d_earlier = None
    if need_later:
        d_later = d_products @ _taps_major(earlier).reshape(c, b * b2 * i).t()
        d_later = d_later.reshape(o, a, a2, c).permute(0, 3, 1, 2)
    if need_earlier:
        d_earlier = _taps_major(later).reshape(o * a * a2, c).t() @ d_products
        d_earlier = d_earlier.reshape(c, b, b2, i).permute(0, 3, 1, 2)
    return d_later, d_earlier


# Folds run as one oneDNN convolution where it has kernels for the dtype: it skips the zero padding
# (so does exactly the GEMM's multiply-adds) and needs no block adds. Measured on a 2-core AVX-512
# CPU at SmallNet k=7's CK folds, float32: 10-25% faster than the GEMM and block adds (r=8's
# (512,256,3,3) after (256,32,3,3): 7.0-7.6 against 9.4-11.8 ms); float64 has no oneDNN kernel
# (its convolution is 14x slower than the GEMM), so it keeps the GEMM.
ONEDNN_FOLD_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_folds(later: Tensor) -> bool:
    return (later.dtype in ONEDNN_FOLD_DTYPES and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled)


def _fold_forward_conv(later: Tensor, earlier: Tensor) -> Tensor:
    """The fold as a convolution: ``later`` (an image of ``c`` channels per output ``o``) padded
    fully, correlated with ``earlier`` flipped, gives ``K[o, i, v+u]`` directly, in ``later``'s
    memory format. Where ``later`` has fewer taps the roles swap (``earlier`` the image, batched
    over its inputs ``i``, ``later`` the filter; a transposed view): the smaller kernel as the
    filter runs over less zero padding (SmallNet k=7's CK r=8 fold of (64,512,3,3) after
    (512,32,5,5): 2.5-3.6 against 2.7-4.2 ms on a 2-core CPU)."""
    a, a2 = later.shape[2:]
    b, b2 = earlier.shape[2:]
    if a * a2 < b * b2:
        return F.conv2d(earlier.transpose(0, 1), later.flip(2, 3), padding=(a - 1, a2 - 1)).transpose(0, 1)
    return F.conv2d(later, earlier.flip(2, 3).transpose(0, 1), padding=(b - 1, b2 - 1))


def _fold_forward_transposed_conv(later: Tensor, earlier: Tensor) -> Tensor:
    """The fold as one transposed convolution (a full convolution needs no flipped copy):
    ``K^T = conv_transpose2d(earlier^T, later^T)``, batched over the earlier kernel's input channels."""
    return F.conv_transpose2d(earlier.transpose(0, 1), later.transpose(0, 1)).transpose(0, 1)


# On a GPU one col2im / im2col launch beats the per-tap block adds (one launch each).
def _fold_forward_col2im(later: Tensor, earlier: Tensor) -> Tensor:
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    products = later.permute(0, 2, 3, 1).reshape(o * a * a2, c) @ earlier.reshape(c, i * b * b2)
    columns = products.reshape(o, a * a2, i * b * b2).transpose(1, 2)  # (o, i*U, V): one column per later tap
    return F.fold(columns, (a + b - 1, a2 + b2 - 1), (b, b2))


def _fold_backward_im2col(later: Tensor, earlier: Tensor, dk: Tensor, need_later: bool, need_earlier: bool):
    o, c, a, a2 = later.shape
    _, i, b, b2 = earlier.shape
    d_products = F.unfold(dk, (b, b2)).transpose(1, 2).reshape(o * a * a2, i * b * b2)
    d_later = d_earlier = None
    if need_later:
        d_later = (d_products @ earlier.reshape(c, i * b * b2).t()).reshape(o, a, a2, c).permute(0, 3, 1, 2)
    if need_earlier:
        d_earlier = (later.permute(0, 2, 3, 1).reshape(o * a * a2, c).t() @ d_products).reshape(c, i, b, b2)
    return d_later, d_earlier


def contiguous_output(t: Tensor) -> Tensor:
    """``t`` contiguous, to be returned by an autograd Function: ``.contiguous()`` only where it
    copies. Under torch.compile on torch 2.11 a Function output made by a ``.contiguous()`` that had
    nothing to do (a contiguous view of a forward-local tensor, e.g. a CK kernel with one input
    channel) receives no gradient: its inputs silently got zeros (tests/nn/test_compile.py)."""
    return t if t.is_contiguous() else t.contiguous()


def tap_sum(w: Tensor) -> Tensor:
    """``sum`` of a kernel ``(o, c, kh, kw)`` over its taps, ``(o, c)``: a GEMV (a reduction over
    the two small trailing dims runs several times slower on CPU)."""
    o, c = w.shape[:2]
    return (w.reshape(o * c, -1) @ w.new_ones(w.shape[2] * w.shape[3])).reshape(o, c)


def fold_costs(shapes, left_first: bool) -> List[int]:
    """Multiply-adds of each fold of ``[(out, in, k)]``, in the order they run (left to right, or
    right to left)."""
    costs = []
    if left_first:
        o, i, k = shapes[0]
        for o2, _, k2 in shapes[1:]:  # (o2, o, k2) after (o, i, k)
            costs.append(o2 * k2 * k2 * o * i * k * k)
            o, k = o2, k + k2 - 1
    else:
        o, i, k = shapes[-1]
        for _, i0, k0 in reversed(shapes[:-1]):  # (o, i, k) before (i, i0, k0)
            costs.append(o * k * k * i * i0 * k0 * k0)
            i, k = i0, k + k0 - 1
    return costs


def ck_partial_numels(shapes, left_first: bool) -> List[int]:
    """Elements of the partial kernels backward needs beyond the weights (``ck._ck_partials``
    ``K[1..L-2]``) for kernels ``[(out, in, k)]``."""
    numels = []
    if left_first:
        o, i, k = shapes[0]
        for o2, _, k2 in shapes[1:-1]:
            o, k = o2, k + k2 - 1
            numels.append(o * i * k * k)
    else:
        o, i, k = shapes[-1]
        for _, i0, k0 in reversed(shapes[1:-1]):
            i, k = i0, k + k0 - 1
            numels.append(o * i * k * k)
        numels.reverse()  # indexed by layer, as the partials are
    return numels


# At most this many elements of partial kernels are kept per CK unit (1 MiB in float32): beyond it
# the memory is worth more than the fold it saves (a SmallNet k=7 at r=8 would save 1.11x the
# compact network's bytes for backward with every partial kept; 1.05x with this cap).
KEEP_PARTIALS_MAX_ELEMENTS = 1 << 18


def ck_keeps_partials(weight_shapes) -> bool:
    """Whether a CK unit keeps its partial kernels from forward to backward instead of folding
    them again: when together they hold no more elements than its weights and at most
    ``KEEP_PARTIALS_MAX_ELEMENTS``, so the composition's saved state stays small and weight-sized
    (never batch-sized) and backward skips all folds but the last (measured on CPU: 2-4% of a
    SmallNet k=7 training step at r=2-8)."""
    shapes = [(s[0], s[1], s[2]) for s in weight_shapes]
    kept = sum(ck_partial_numels(shapes, ck_folds_left_first_shapes(shapes)))
    return kept <= min(sum(o * i * k * k for o, i, k in shapes), KEEP_PARTIALS_MAX_ELEMENTS)


def fold_cost(shapes) -> Tuple[int, int]:
    """Multiply-adds of folding ``[(out, in, k)]`` left to right vs right to left."""
    return sum(fold_costs(shapes, True)), sum(fold_costs(shapes, False))


def ck_folds_left_first_shapes(shapes) -> bool:
    left_cost, right_cost = fold_cost(shapes)
    return left_cost <= right_cost


def ck_folds_left_first(weights: Sequence[Tensor]) -> bool:
    return ck_folds_left_first_shapes([(w.shape[0], w.shape[1], w.shape[2]) for w in weights])
