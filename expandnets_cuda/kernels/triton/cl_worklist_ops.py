"""Many CL/FC units of different shapes composed by a fixed number of launches (``cl_worklist``).

``compose_cl_network(units)`` is the Triton composer's ``cl_network``: forward one launch for the
weights (+ one for the biases), backward three (dW1, dW2, dW3, the bias fold's terms included)
(+ one for db1/db2), whatever the number of units. The units' parameters stay where they are: the
kernels read them through a table of their addresses. The results go into one flat buffer per
kind (W, b; dW1, dW2, dW3, db1, db2), returned as per-unit views.

What a step must not do (so that it stays CUDA-graph capturable after a warm-up call): no host
synchronisation and no host-to-device copy. The work list (``WorkList``: per-unit sizes and
offsets, per-kernel item lists) depends only on the units' shapes and is built once per tuple of
shapes, dtype and device; the address table depends on where the parameters live, which does not
change from step to step (optimisers update in place), and is cached by those addresses. Both are
copied to the device once, on their first use, which must therefore come before a capture. (A
capture whose inputs moved since the warm-up, e.g. per-step casts, fills its own table on the
device instead of copying it, and keeps it for good: the graph reads it at every replay.) Both
caches are bounded (``caches.WORK_LIST_CACHE_SIZE`` work lists, ``TABLE_CACHE_SIZE`` tables, the
oldest dropped first); whatever a capture read is kept for good instead.

``torch.library`` ops with fake implementations, so ``torch.compile`` sees two opaque calls.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import triton

from expandnets_cuda import caches
from expandnets_cuda.compose.cl import cl_operands
from expandnets_cuda.kernels.triton import cl_worklist as kernels
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton import offsets

Tensor = torch.Tensor
Shape = Tuple[int, int, int, int, int, int]  # G, A, I, C, O, T

UNIT_FIELDS, ITEM_FIELDS, TABLE_FIELDS = (kernels.UNIT_FIELDS.value, kernels.ITEM_FIELDS.value,
                                           kernels.TABLE_FIELDS.value)
KERNELS = ("fwd", "bias", "bwd_w1", "bwd_w2", "bwd_w3", "bias_bwd")
KINDS = ("W", "b", "W1", "W2", "W3", "b1", "b2")  # the flat buffers, in the order of the unit record's offsets
TABLE_CACHE_SIZE = 256


def bias_bwd_launch(A: int, C: int, O: int, dtype: torch.dtype) -> lc.Launch:
    """db1/db2: matrix-vector products, (BC x BO) tiles of W3 and (BC x BA) tiles of W2."""
    return lc.Launch.of(4, lc.COMPOSE_STAGES, BA=lc.block(A, 32), BC=lc.block(C, 32), BO=lc.block(O, 32))


def launches_for(A: int, I: int, C: int, O: int, T: int, dtype: torch.dtype) -> Dict[str, lc.Launch]:
    """The tile rules of the one-unit kernels (launch_configs), at the largest extents of the list."""
    return {"fwd": lc.cl_compose_fwd(A, I, C, O, dtype), "bias": lc.cl_bias_fold(A, C, O, T, dtype),
            "bwd_w1": lc.cl_compose_bwd_w1(A, I, C, O, dtype), "bwd_w2": lc.cl_compose_bwd_w2(A, I, C, O, dtype),
            "bwd_w3": lc.cl_compose_bwd_w3(A, I, C, O, dtype), "bias_bwd": bias_bwd_launch(A, C, O, dtype)}


def _tiles(n: int, edge: int) -> int:
    return triton.cdiv(n, edge)


def _items_of(u: int, outer: int, m: int, n: int) -> Tensor:
    """Rows (u, outer index, tile m, tile n) for every combination, outer index slowest."""
    grid = torch.stack(torch.meshgrid(torch.arange(outer), torch.arange(m), torch.arange(n), indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    return torch.cat([torch.full((grid.shape[0], 1), u, dtype=torch.int64), grid], 1)


@dataclass(frozen=True)
class WorkList:
    """Everything about a list of units that depends on their shapes only."""

    shapes: Tuple[Shape, ...]
    units: Tensor  # (n, UNIT_FIELDS) int64, on the device
    items: Dict[str, Tensor]  # kernel -> (n_items, ITEM_FIELDS) int64, on the device
    launches: Dict[str, lc.Launch]
    totals: Dict[str, int]  # kind (W, b, W1, W2, W3, b1, b2) -> elements of its flat buffer

    def total(self, kind: str) -> int:
        return self.totals[kind]


def _kind_sizes(shape: Shape) -> Dict[str, int]:
    G, A, I, C, O, T = shape
    return {"W": G * O * I * T, "b": G * O, "W1": G * A * I, "W2": G * C * A * T, "W3": G * O * C,
            "b1": G * A, "b2": G * C}


def _unit_items(u: int, shape: Shape, launch: Dict[str, lc.Launch]) -> Dict[str, Tuple[int, Tensor]]:
    """Unit ``u``'s items per kernel, each with the length of one item's reduction loops (in tiles)."""
    G, A, I, C, O, T = shape
    f, b, w1, w2 = launch["fwd"], launch["bias"], launch["bwd_w1"], launch["bwd_w2"]
    w3, bb = launch["bwd_w3"], launch["bias_bwd"]
    return {
        "fwd": (_tiles(C, f["BC"]) * _tiles(A, f["BA"]),
                _items_of(u, G * T, _tiles(O, f["BO"]), _tiles(I, f["BI"]))),
        "bias": (_tiles(C, b["BC"]) * _tiles(A * T, b["BK"]), _items_of(u, G, _tiles(O, b["BO"]), 1)),
        "bwd_w1": (T * _tiles(C, w1["BC"]) * _tiles(O, w1["BO"]),
                   _items_of(u, G, _tiles(A, w1["BA"]), _tiles(I, w1["BI"]))),
        "bwd_w2": (_tiles(O, w2["BO"]) * _tiles(I, w2["BI"]),
                   _items_of(u, G * T, _tiles(C, w2["BC"]), _tiles(A, w2["BA"]))),
        "bwd_w3": (T * _tiles(A, w3["BA"]) * _tiles(I, w3["BI"]),
                   _items_of(u, G, _tiles(O, w3["BO"]), _tiles(C, w3["BC"]))),
        "bias_bwd": (_tiles(C, bb["BC"]) * (_tiles(O, bb["BO"]) + T), _items_of(u, G, _tiles(A, bb["BA"]), 1)),
    }


def build_work_list(shapes: Tuple[Shape, ...], dtype: torch.dtype, device: torch.device) -> WorkList:
    launch = launches_for(*(max(s[k] for s in shapes) for k in range(1, 6)), dtype)
    records, items = [], {name: [] for name in KERNELS}
    totals = dict.fromkeys(KINDS, 0)
    for u, shape in enumerate(shapes):
        records.append([*shape, *(totals[kind] for kind in KINDS)] + [0] * (UNIT_FIELDS - 6 - len(KINDS)))
        for kind, size in _kind_sizes(shape).items():
            totals[kind] += size
        for name, (cost, rows) in _unit_items(u, shape, launch).items():
            items[name].append((cost, rows))
    units = torch.tensor(records, dtype=torch.int64).to(device)
    # The longest items first: the GPU starts programs roughly in order, so the short ones fill
    # in behind them instead of leaving a tail of long programs on a few SMs.
    ordered = {name: torch.cat([rows for _, rows in sorted(per_unit, key=lambda cr: -cr[0])])
               for name, per_unit in items.items()}
    return WorkList(shapes, units, {name: rows.contiguous().to(device) for name, rows in ordered.items()},
                    launch, totals)


# Work lists: bounded (caches.WORK_LIST_CACHE_SIZE, oldest dropped first); the ones a CUDA-graph
# capture read are pinned (the graph reads their tensors at every replay).
_WORK_LISTS: Dict[tuple, WorkList] = {}
_PINNED_WORK_LISTS: set = set()
_TABLES: "collections.OrderedDict[tuple, Tensor]" = collections.OrderedDict()
_CAPTURED_TABLES: Dict[tuple, Tensor] = {}


def work_list(shapes: Tuple[Shape, ...], dtype: torch.dtype, device: torch.device) -> WorkList:
    key = (shapes, dtype, device)
    found = _WORK_LISTS.get(key)
    if found is None:
        if _capturing(device):
            raise RuntimeError("cl_network: these unit shapes were not composed before the CUDA-graph capture; "
                               "run a warm-up step first (the work list is built and copied on first use)")
        found = build_work_list(shapes, dtype, device)
        caches.remember(_WORK_LISTS, key, found, caches.WORK_LIST_CACHE_SIZE, _PINNED_WORK_LISTS)
    elif _capturing(device):
        _PINNED_WORK_LISTS.add(key)
    return found


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _table_on_device(addresses: Tuple[int, ...], rows: int, device: torch.device) -> Tensor:
    if not _capturing(device):
        return torch.tensor(addresses, dtype=torch.int64).reshape(rows, TABLE_FIELDS).to(device)
    # A capture whose parameters moved since the warm-up (e.g. per-step casts, allocated from the
    # graph's pool): a host-to-device copy cannot be captured, fills can (the graph replays them).
    table = torch.empty(rows * TABLE_FIELDS, dtype=torch.int64, device=device)
    for k, address in enumerate(addresses):
        table[k].fill_(address)
    return table.view(rows, TABLE_FIELDS)


def address_table(params: Sequence[Sequence[Optional[Tensor]]], device: torch.device) -> Tensor:
    """(n, TABLE_FIELDS) int64 addresses of each unit's (w1, w2, w3, b1, b2, b3), 0 for no bias;
    cached by the addresses themselves (a stale entry cannot be wrong: same addresses, same table).
    Tables made during a CUDA-graph capture are never evicted: the graph reads them at every replay."""
    addresses = tuple(t.data_ptr() if t is not None else 0 for unit in params for t in unit)
    key = (device, addresses)
    table = _CAPTURED_TABLES.get(key)
    if table is not None:
        return table
    table = _TABLES.get(key)
    if table is None:
        table = _table_on_device(addresses, len(params), device)
        if _capturing(device):
            _CAPTURED_TABLES[key] = table
            return table
        _TABLES[key] = table
        while len(_TABLES) > TABLE_CACHE_SIZE:
            try:
                _TABLES.popitem(last=False)
            except KeyError:  # another thread emptied it meanwhile
                break
    elif _capturing(device):  # made before the capture, read by it: pinned from now on
        _CAPTURED_TABLES[key] = table
        _TABLES.pop(key, None)
    else:
        try:
            _TABLES.move_to_end(key)
        except KeyError:  # another thread evicted it meanwhile: the table itself is still good
            pass
    return table


def _shapes(w1s: Sequence[Tensor], w2s: Sequence[Tensor], w3s: Sequence[Tensor]) -> Tuple[Shape, ...]:
    """(G, A, I, C, O, T) of each unit from the canonical ``W1 (G, A, I)``, ``W2 (G, C, A, T)``, ``W3 (G, O, C)``."""
    return tuple((int(w1.shape[0]), int(w1.shape[1]), int(w1.shape[2]), int(w2.shape[1]), int(w3.shape[1]),
                  int(w2.shape[3])) for w1, w2, w3 in zip(w1s, w2s, w3s))


def _contiguous(tensors: Sequence[Tensor]) -> List[Tensor]:
    return [t.contiguous() for t in tensors]


def _setup(w1s, w2s, w3s, b1s, b2s, b3s):
    """Contiguous inputs, their work list and address table."""
    w1s, w2s, w3s, b1s, b2s, b3s = map(_contiguous, (w1s, w2s, w3s, b1s, b2s, b3s))
    ref = w2s[0]
    work = work_list(_shapes(w1s, w2s, w3s), ref.dtype, ref.device)
    biases = list(zip(b1s, b2s, b3s)) if b1s else [(None, None, None)] * len(w1s)
    table = address_table([(w1, w2, w3, *b) for (w1, w2, w3), b in zip(zip(w1s, w2s, w3s), biases)], ref.device)
    return (w1s, w2s, w3s, b1s, b2s, b3s), work, table


def _wide(work: WorkList, *tensors) -> bool:
    """64-bit offsets when any unit's tensor, any flat buffer or the work list itself is large."""
    largest_flat = max(work.total(kind) for kind in KINDS)
    return largest_flat >= offsets.WIDE_ELEMENTS or offsets.needs_wide_offsets(work.units, *work.items.values(),
                                                                                *tensors)


def _launch(kernel, work: WorkList, name: str, *args, **modes) -> None:
    items = work.items[name]
    if items.shape[0]:
        kernel[(items.shape[0],)](*args[:2], items, *args[2:], **modes, **work.launches[name].kwargs())


@torch.library.custom_op("expandnets::triton_cl_network_compose", mutates_args=())
def cl_network_compose(w1s: List[Tensor], w2s: List[Tensor], w3s: List[Tensor], b1s: List[Tensor],
                    b2s: List[Tensor], b3s: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """Flat ``W`` (every unit's ``(G, O, I, T)`` in turn) and flat ``b`` (``(G, O)`` each; empty
    without biases). ``b1s, b2s, b3s``: all empty (no biases) or one per unit."""
    (w1s, w2s, w3s, b1s, b2s, b3s), work, table = _setup(w1s, w2s, w3s, b1s, b2s, b3s)
    ref = w2s[0]
    out_w = torch.empty(work.total("W"), device=ref.device, dtype=ref.dtype)
    out_b = torch.empty(work.total("b") if b1s else 0, device=ref.device, dtype=ref.dtype)
    modes = dict(ACC=lc.acc_type(ref.dtype), WIDE=_wide(work, *w1s, *w2s, *w3s))
    _launch(kernels.cl_network_fwd_kernel, work, "fwd", table, work.units, out_w, **modes)
    if b1s:
        _launch(kernels.cl_network_bias_kernel, work, "bias", table, work.units, out_b, **modes)
    return out_w, out_b


def _flat_sizes(w1s, w2s, w3s, b1s):
    w, b = 0, 0
    for w1, w2, w3 in zip(w1s, w2s, w3s):
        w += w1.shape[0] * w3.shape[1] * w1.shape[2] * w2.shape[3]
        b += w1.shape[0] * w3.shape[1]
    return w, (b if len(b1s) else 0)


@cl_network_compose.register_fake
def _cl_network_compose_fake(w1s, w2s, w3s, b1s, b2s, b3s):
    w, b = _flat_sizes(w1s, w2s, w3s, b1s)
    return w2s[0].new_empty(w), w2s[0].new_empty(b)


@torch.library.custom_op("expandnets::triton_cl_network_compose_backward", mutates_args=())
def cl_network_compose_backward(grad_w: Tensor, grad_b: Tensor, w1s: List[Tensor], w2s: List[Tensor],
                             w3s: List[Tensor], b1s: List[Tensor], b2s: List[Tensor],
                             b3s: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Flat dW1, dW2, dW3, db1, db2 (the last two empty without biases; db3 is ``grad_b`` itself)."""
    (w1s, w2s, w3s, b1s, b2s, b3s), work, table = _setup(w1s, w2s, w3s, b1s, b2s, b3s)
    grad_w, grad_b = grad_w.contiguous(), grad_b.contiguous()
    ref = w2s[0]
    has_bias = bool(b1s)
    flat = {kind: torch.empty(work.total(kind) if has_bias or kind.startswith("W") else 0,
                              device=ref.device, dtype=ref.dtype) for kind in ("W1", "W2", "W3", "b1", "b2")}
    modes = dict(ACC=lc.acc_type(ref.dtype), WIDE=_wide(work, grad_w, *w1s, *w2s, *w3s))
    bias_grad = grad_b if has_bias else grad_w  # not read without biases
    _launch(kernels.cl_network_bwd_w1_kernel, work, "bwd_w1", table, work.units, grad_w, flat["W1"], **modes)
    _launch(kernels.cl_network_bwd_w2_kernel, work, "bwd_w2", table, work.units, grad_w, bias_grad, flat["W2"],
            HAS_BIAS=has_bias, **modes)
    _launch(kernels.cl_network_bwd_w3_kernel, work, "bwd_w3", table, work.units, grad_w, bias_grad, flat["W3"],
            HAS_BIAS=has_bias, **modes)
    if has_bias:
        _launch(kernels.cl_network_bias_bwd_kernel, work, "bias_bwd", table, work.units, grad_b, flat["b1"],
                flat["b2"], **modes)
    return flat["W1"], flat["W2"], flat["W3"], flat["b1"], flat["b2"]


@cl_network_compose_backward.register_fake
def _cl_network_compose_backward_fake(grad_w, grad_b, w1s, w2s, w3s, b1s, b2s, b3s):
    def flat(tensors):
        return w2s[0].new_empty(sum(math.prod(t.shape) for t in tensors))
    return flat(w1s), flat(w2s), flat(w3s), flat(b1s), flat(b2s)


def _setup_context(ctx, inputs, output):
    w1s, w2s, w3s, b1s, b2s, b3s = inputs
    ctx.counts = [len(x) for x in inputs]
    ctx.save_for_backward(*w1s, *w2s, *w3s, *b1s, *b2s, *b3s)  # the parameters, nothing computed


def _split_flat(flat: Tensor, like: Sequence[Tensor]) -> List[Tensor]:
    sizes = [t.numel() for t in like]
    return [chunk.view(t.shape) for chunk, t in zip(flat.split(sizes), like)]


def _backward(ctx, grad_w, grad_b):
    saved, lists = list(ctx.saved_tensors), []
    for n in ctx.counts:
        lists.append(saved[:n])
        saved = saved[n:]
    w1s, w2s, w3s, b1s, b2s, b3s = lists
    flats = cl_network_compose_backward(grad_w, grad_b, w1s, w2s, w3s, b1s, b2s, b3s)
    grads = [_split_flat(flat, like) for flat, like in zip(flats, (w1s, w2s, w3s, b1s, b2s))]
    grads.append(_split_flat(grad_b, b3s))
    return tuple(grads)


cl_network_compose.register_autograd(_backward, setup_context=_setup_context)


def compose_cl_network(units: Sequence[tuple]) -> List[Tuple[Tensor, Optional[Tensor]]]:
    """``cl_network``: ``units`` a sequence of ``cl`` argument tuples ``(w1, b1, w2, b2, w3, b3, groups)``
    (``w1 (g*a, i, 1, 1)``, ``w2 (g*c, a, kh, kw)``, ``w3 (g*o, c, 1, 1)``, biases 1-D or all
    None; one dtype and device) -> each unit's ``(W (g*o, i, kh, kw), b (g*o,) or None)``, as
    a composer's ``cl`` returns them, differentiable with respect to every tensor."""
    if not units:
        return []
    canon = [cl_operands(*unit) for unit in units]
    with_bias = [c.b1 is not None for c in canon]
    if any(with_bias) and not all(with_bias):
        raise ValueError("cl_network: the units must all have biases or all have none")
    dtypes = {(w.dtype, w.device) for c in canon for w in (c.w1, c.w2, c.w3)}
    if len(dtypes) != 1:
        raise ValueError(f"cl_network: the units must share one dtype and device, got {sorted(map(str, dtypes))}")
    w1s, w2s, w3s = ([c[k] for c in canon] for k in range(3))
    b1s, b2s, b3s = ([c[k] for c in canon] if all(with_bias) else [] for k in range(3, 6))
    flat_w, flat_b = cl_network_compose(w1s, w2s, w3s, b1s, b2s, b3s)
    out_shapes = [c.weight_shape for c in canon]
    weights = [chunk.view(shape) for chunk, shape in zip(flat_w.split([math.prod(s) for s in out_shapes]), out_shapes)]
    if not all(with_bias):
        return [(w, None) for w in weights]
    return list(zip(weights, flat_b.split([s[0] for s in out_shapes])))
