"""Many CK units composed level by level: launches that grow with the number of fold levels, not units.

A CK unit is a stack of ``L`` kernels ``W_0 .. W_{L-1}`` (a kxk conv expanded into 3x3 convs);
composing it folds them into one kernel by ``L - 1`` two-kernel folds (docs/design.md section 3),
in the cheaper order per unit (``products.ck_folds_left_first``). Every unit's
``s``-th fold does not depend on any other unit, so ``_ComposeCKNetwork`` runs the ``s``-th folds of
*all* units as one call of a ``NetworkFolds`` (``forward(pairs) -> [K]``,
``backward(pairs, dks) -> [(d later, d earlier)]``): a work-list kernel makes that one launch
per level (``kernels/triton/ck_worklist_ops.py``), the torch reference ``TORCH_NETWORK_FOLDS``
loops. The bias fold ``bias_j = tap_sum(W_j) @ bias_{j-1} + b_j`` runs per layer index over
the flat concatenation of the units' vectors (a gather, a product and an ``index_add`` whose
indices are cached per tuple of shapes), so it adds no work per unit either.

Like ``ck._ComposeCK`` the Function saves the parameters only and recomputes the
partial kernels in backward. Double backward works with ``TORCH_NETWORK_FOLDS`` (the backward is
torch ops); a kernel ``NetworkFolds`` (custom ops without an autograd formula) does not support it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from expandnets_cuda import caches
from expandnets_cuda.compose import products

Tensor = torch.Tensor


class NetworkFolds(NamedTuple):
    """Many independent two-kernel folds per call: ``forward(pairs) -> [K]`` and
    ``backward(pairs, dks) -> [(d later, d earlier)]``, ``pairs`` a list of ``(later, earlier)``."""

    forward: Callable
    backward: Callable


def _torch_forward(pairs):
    return [products.fold_forward(later, earlier) for later, earlier in pairs]


def _torch_backward(pairs, dks):
    return [products.fold_backward(later, earlier, dk) for (later, earlier), dk in zip(pairs, dks)]


TORCH_NETWORK_FOLDS = NetworkFolds(_torch_forward, _torch_backward)


# ------------------------------------------------------------------------------------ biases
@dataclass(frozen=True)
class _BiasLevel:
    """Layer index ``j`` of every unit that has one, as one flat vector (units in order)."""

    units: Tuple[int, ...]
    offsets: Dict[int, int]  # unit -> where its bias after layer j starts in the level's vector
    size: int
    rows: Optional[Tensor]  # (sum of o*c,) position in this level's vector of each entry of tap_sum(W_j)
    cols: Optional[Tensor]  # (sum of o*c,) position in the previous level's vector of its column
    taps: int  # every W_j's taps, or 0 where they differ: then ``tap_rows`` maps each weight to its (o, c)
    tap_rows: Optional[Tensor]


# Bounded (caches.BIAS_PLAN_CACHE_SIZE, oldest dropped first); plans a CUDA-graph capture read are
# pinned: the graph reads their index tensors at every replay.
_BIAS_PLANS: Dict[tuple, List[_BiasLevel]] = {}
_PINNED_BIAS_PLANS: set = set()


def _capturing(device: torch.device) -> bool:
    return (not torch.compiler.is_compiling() and device.type == "cuda"
            and torch.cuda.is_current_stream_capturing())


def segment_positions(counts: Sequence[int]) -> Tuple[Tensor, Tensor]:
    """For ``counts[k]`` entries of segment ``k`` in turn: each entry's segment and its position in
    it (a fixed number of ops however many segments: one-time builds stay off the step's op count)."""
    total = sum(counts)
    sizes = torch.tensor(list(counts), dtype=torch.int64)
    segment = torch.repeat_interleave(torch.arange(len(counts)), sizes, output_size=total)
    return segment, torch.arange(total) - (torch.cumsum(sizes, 0) - sizes)[segment]


def _index(positions: Tensor, device: torch.device, bound: int) -> Tensor:
    """An index (every entry below ``bound``) on ``device``, int32 where it fits (the indices are
    tap-sum sized: half the memory). The bound comes from the shapes, not from the tensor, so
    nothing here reads a tensor value (``torch.compile`` traces it without a graph break)."""
    return positions.to(device=device, dtype=torch.int32 if bound <= 2 ** 31 else torch.int64)


def _bias_plan(shapes: Tuple[Tuple[Tuple[int, int, int], ...], ...], device: torch.device) -> List[_BiasLevel]:
    """Per layer index, the flat gather/scatter indices of ``tap_sum(W_j) @ bias_{j-1}``; built
    once per tuple of ``(out, in, taps)`` shapes (an indexed op, not a loop over the units, per step)."""
    key = (shapes, device)
    found = _BIAS_PLANS.get(key)
    if found is not None:
        if _capturing(device):
            _PINNED_BIAS_PLANS.add(key)
        return found
    levels: List[_BiasLevel] = []
    for j in range(max(len(s) for s in shapes)):
        units = tuple(u for u, s in enumerate(shapes) if len(s) > j)
        outs, ins, taps = ([shapes[u][j][k] for u in units] for k in range(3))
        starts = [0, *itertools.accumulate(outs)][:-1]
        offsets = dict(zip(units, starts))
        if not j:
            levels.append(_BiasLevel(units, offsets, sum(outs), None, None, 0, None))
            continue
        unit, at = segment_positions([o * c for o, c in zip(outs, ins)])
        cols_of = torch.tensor(ins)[unit]
        rows = torch.tensor(starts)[unit] + at // cols_of
        cols = torch.tensor([levels[j - 1].offsets[u] for u in units])[unit] + at % cols_of
        same_taps = len(set(taps)) == 1
        tap_rows = None
        if not same_taps:  # each weight of the flat W_j's to its (o, c) entry
            tap_rows = torch.repeat_interleave(torch.arange(rows.shape[0]), torch.tensor(taps)[unit],
                                               output_size=sum(o * c * t for o, c, t in zip(outs, ins, taps)))
            tap_rows = _index(tap_rows, device, rows.shape[0])
        levels.append(_BiasLevel(units, offsets, sum(outs), _index(rows, device, sum(outs)),
                                 _index(cols, device, levels[j - 1].size),
                                 taps[0] if same_taps else 0, tap_rows))
    # Only real index tensors are kept: those made while torch.compile traces, or under a fake or
    # tracing mode, belong to that trace and would mix modes (or fail) in the next one.
    if not torch.compiler.is_compiling() and not is_in_torch_dispatch_mode():
        if _capturing(device):
            _PINNED_BIAS_PLANS.add(key)
        caches.remember(_BIAS_PLANS, key, levels, caches.BIAS_PLAN_CACHE_SIZE, _PINNED_BIAS_PLANS)
    return levels


def _flat_tap_sums(level: _BiasLevel, ws: Sequence[Tensor]) -> Tensor:
    """``tap_sum`` of every kernel of a level, concatenated: one reduction (an indexed one where
    the kernels' taps differ)."""
    if level.tap_rows is None:
        return torch.cat([w.reshape(-1, level.taps) for w in ws]).sum(1)
    flat = torch.cat([w.reshape(-1) for w in ws])
    return flat.new_zeros(level.rows.shape[0]).index_add(0, level.tap_rows, flat)


def _fold_biases(plan: List[_BiasLevel], weights, biases):
    """The bias after each layer index, flat per level, and the flat tap sums that made them."""
    after = [torch.cat([biases[u][0] for u in plan[0].units])]
    tap_sums: List[Optional[Tensor]] = [None]
    for j, level in enumerate(plan[1:], 1):
        ts = _flat_tap_sums(level, [weights[u][j] for u in level.units])
        fresh = torch.cat([biases[u][j] for u in level.units])
        after.append(fresh.index_add(0, level.rows, ts * after[j - 1].index_select(0, level.cols)))
        tap_sums.append(ts)
    return after, tap_sums


# ------------------------------------------------------------------------------------ kernels
def _fold_levels(weights, left_first, folds_network: NetworkFolds, last: bool):
    """Each unit's partial kernels: ``partials[u][s]`` is what its fold ``s`` combines with a
    weight (``W_0`` or ``W_{L-1}`` at ``s = 0``). ``last``: also the final fold, whose result
    ends the list; without it the partials stop before it (what backward recomputes)."""
    n_layers = [len(w) for w in weights]
    partials = [[w[0] if lf else w[-1]] for w, lf in zip(weights, left_first)]
    for s in range(max(n_layers) - (1 if last else 2)):
        active = [u for u, n in enumerate(n_layers) if s < n - (1 if last else 2)]
        outs = folds_network.forward([_pair(weights[u], partials[u][s], left_first[u], s) for u in active])
        for u, kernel in zip(active, outs):
            partials[u].append(kernel)
    return partials


def _pair(weights, partial, left_first: bool, s: int):
    """``(later, earlier)`` of a unit's fold ``s``: the next weight after the partial (left to
    right) or before it (right to left)."""
    if left_first:
        return weights[s + 1], partial
    return partial, weights[len(weights) - 2 - s]


class _ComposeCKNetwork(torch.autograd.Function):
    """``(folds_network, layers, has_bias, every unit's W_0..W_{L-1}, then its b_0..b_{L-1} if
    has_bias) -> (K of every unit, then b of every unit if has_bias)``."""

    @staticmethod
    def forward(ctx, folds_network, layers, has_bias, *tensors):
        weights, biases = _unpack(tensors, layers, has_bias)
        ctx.folds_network, ctx.layers, ctx.has_bias = folds_network, layers, has_bias
        ctx.left_first = [products.ck_folds_left_first(w) for w in weights]
        partials = _fold_levels(weights, ctx.left_first, folds_network, last=True)
        kernels = [products.contiguous_output(p[-1]) for p in partials]
        ctx.save_for_backward(*tensors)  # the parameters only
        if not has_bias:
            return tuple(kernels)
        plan = _bias_plan(_shapes(weights), weights[0][0].device)
        after, _ = _fold_biases(plan, weights, biases)
        return (*kernels, *(after[n - 1].narrow(0, plan[n - 1].offsets[u], w[-1].shape[0])
                            for u, (n, w) in enumerate(zip(layers, weights))))

    @staticmethod
    def backward(ctx, *grads):
        layers, n_units = ctx.layers, len(ctx.layers)
        weights, biases = _unpack(ctx.saved_tensors, layers, ctx.has_bias)
        d_kernels, d_out_biases = grads[:n_units], grads[n_units:]
        d_weights = [[None] * n for n in layers]
        _kernel_backward(ctx.folds_network, weights, ctx.left_first, d_kernels, d_weights)
        d_biases = [[None] * n for n in layers]
        if ctx.has_bias:
            _bias_backward(weights, biases, d_out_biases, d_weights, d_biases)
        flat = [d for u in range(n_units) for d in d_weights[u] + (d_biases[u] if ctx.has_bias else [])]
        return (None, None, None, *(d if need else None for d, need in zip(flat, ctx.needs_input_grad[3:])))


def _kernel_backward(folds_network, weights, left_first, d_kernels, d_weights) -> None:
    """Undo every unit's folds, the last first, one ``folds_network.backward`` call per level."""
    n_layers = [len(w) for w in weights]
    partials = _fold_levels(weights, left_first, folds_network, last=False)
    grad = list(d_kernels)
    for s in range(max(n_layers) - 2, -1, -1):
        active = [u for u, n in enumerate(n_layers) if s <= n - 2]
        pairs = [_pair(weights[u], partials[u][s], left_first[u], s) for u in active]
        for u, (d_later, d_earlier) in zip(active, folds_network.backward(pairs, [grad[u] for u in active])):
            n = n_layers[u]
            if left_first[u]:  # fold(W_{s+1}, partial_s)
                d_weights[u][s + 1], grad[u] = d_later, d_earlier
            else:  # fold(partial_s, W_{n-2-s})
                d_weights[u][n - 2 - s], grad[u] = d_earlier, d_later
    for u, n in enumerate(n_layers):  # what the first fold's partial was: a weight
        d_weights[u][0 if left_first[u] else n - 1] = grad[u]
    for u, n in enumerate(n_layers):
        d_weights[u] = [d.contiguous() for d in d_weights[u]]


def _bias_backward(weights, biases, d_out_biases, d_weights, d_biases) -> None:
    """From the last layer index down: ``db_j = g``, ``dW_j += g bias_{j-1}^T`` on every tap,
    ``g <- tap_sum(W_j)^T g``; flat over the units of each level."""
    plan = _bias_plan(_shapes(weights), weights[0][0].device)
    after, tap_sums = _fold_biases(plan, weights, biases)
    n_layers = [len(w) for w in weights]
    back = None  # tap_sum(W_{j+1})^T g, flat over level j's vector
    for j in range(len(plan) - 1, -1, -1):
        level = plan[j]
        pieces = [d_out_biases[u] if n_layers[u] - 1 == j else back.narrow(0, level.offsets[u], biases[u][j].numel())
                  for u in level.units]
        grad = torch.cat(pieces)
        for u in level.units:
            d_biases[u][j] = grad.narrow(0, level.offsets[u], biases[u][j].numel())
        if j == 0:
            break
        picked = grad.index_select(0, level.rows)
        _add_rank_one(level, [d_weights[u] for u in level.units], j, picked * after[j - 1].index_select(0, level.cols))
        back = grad.new_zeros(plan[j - 1].size).index_add(0, level.cols, tap_sums[j] * picked)


def _add_rank_one(level: _BiasLevel, unit_d_weights, j: int, rank_one: Tensor) -> None:
    """``dW_j += rank_one`` (flat ``(o, c)`` of every unit, the same on every tap), in one add."""
    ds = [d[j] for d in unit_d_weights]
    if level.tap_rows is None:
        summed = torch.cat([d.reshape(-1, level.taps) for d in ds]) + rank_one[:, None]
    else:
        summed = torch.cat([d.reshape(-1) for d in ds]) + rank_one.index_select(0, level.tap_rows)
    for d, chunk in zip(unit_d_weights, summed.reshape(-1).split([x.numel() for x in ds])):
        d[j] = chunk.view(d[j].shape)


def _shapes(weights) -> Tuple[Tuple[Tuple[int, int, int], ...], ...]:
    return tuple(tuple((int(w.shape[0]), int(w.shape[1]), int(w.shape[2] * w.shape[3])) for w in unit)
                 for unit in weights)


def _unpack(tensors, layers, has_bias):
    weights, biases, at = [], [], 0
    for n in layers:
        weights.append(list(tensors[at:at + n]))
        at += n
        if has_bias:
            biases.append(list(tensors[at:at + n]))
            at += n
    return weights, biases


def compose_ck_network(units: Sequence[Tuple[Sequence[Tensor], Optional[Sequence[Tensor]]]],
                    folds_network: NetworkFolds = TORCH_NETWORK_FOLDS) -> List[Tuple[Tensor, Optional[Tensor]]]:
    """``ck_network``: ``units`` a sequence of ``(weights, biases)`` (``weights`` the ``L >= 2``
    kernels ``(out, in, kh, kw)`` of one CK unit, ``biases`` their 1-D biases or ``None``; all
    units with biases or none, one dtype and device; ``L`` may differ) -> each unit's ``(K, b or
    None)``, as ``ck.compose_ck`` returns them, differentiable with respect to every
    tensor. ``folds_network``: the torch reference (default) or a backend's work-list folds."""
    if not units:
        return []
    with_bias = [biases is not None for _, biases in units]
    if any(with_bias) and not all(with_bias):
        raise ValueError("ck_network: the units must all have biases or all have none")
    if any(len(weights) < 2 for weights, _ in units):
        raise ValueError("ck_network: every unit needs at least two kernels to fold")
    kinds = {(w.dtype, w.device) for weights, _ in units for w in weights}
    if len(kinds) != 1:
        raise ValueError(f"ck_network: the units must share one dtype and device, got {sorted(map(str, kinds))}")
    has_bias = all(with_bias)
    layers = tuple(len(weights) for weights, _ in units)
    tensors = [t for weights, biases in units for t in (*weights, *(biases if has_bias else ()))]
    out = _ComposeCKNetwork.apply(folds_network, layers, has_bias, *tensors)
    n = len(units)
    return list(zip(out[:n], out[n:] if has_bias else [None] * n))
