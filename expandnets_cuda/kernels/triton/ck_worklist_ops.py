"""One CK fold level of many units by one launch forward, two backward (``ck_worklist``).

``TRITON_NETWORK_FOLDS`` is the ``ck_network.NetworkFolds`` of these ops and ``compose_ck_network(units)``
the Triton composer's ``ck_network``: all CK units of a network compose with ``L - 1`` forward
launches and ``L - 2`` (recomputed partials) + ``2 (L - 1)`` backward launches, ``L`` the
deepest unit's layer count, whatever the number of units.

As in ``cl_worklist_ops``: the work list (per-unit extents and flat-buffer offsets, per-kernel
items) depends on the fold shapes only and is built and copied to the device once per tuple of
shapes, dtype and device; the operands are read through a cached int64 address table
(``cl_worklist_ops.address_table``, one row per fold: later, earlier, grad). The parameters'
addresses do not change between steps; the partial kernels and gradients are fresh each step,
but the caching allocator hands the same blocks back step after step, so their tables hit the
(LRU) cache too. No host synchronisation either way. The results go into one flat buffer per
call (K; d later, d earlier), returned as per-fold views.

``torch.library`` ops with fake implementations, so ``torch.compile`` sees opaque calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import triton

from expandnets_cuda import caches
from expandnets_cuda.compose import ck_network
from expandnets_cuda.kernels.triton import ck_worklist as kernels
from expandnets_cuda.kernels.triton import cl_worklist_ops
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton import offsets

Tensor = torch.Tensor
FoldShape = Tuple[int, int, int, int, int, int, int]  # O, C, I, A, A2, B, B2

KERNELS = ("fwd", "bwd_later", "bwd_earlier")
KINDS = ("K", "d_later", "d_earlier")  # the flat buffers, in the order of the unit record's offsets


def launches_for(O: int, C: int, I: int, dtype: torch.dtype) -> Dict[str, lc.Launch]:
    """The tile rules of the one-fold kernels (launch_configs), at the largest extents of the list."""
    return {"fwd": lc.ck_fold_fwd(O, C, I, dtype), "bwd_later": lc.ck_fold_bwd_later(O, C, I, dtype),
            "bwd_earlier": lc.ck_fold_bwd_earlier(O, C, I, dtype)}


@dataclass(frozen=True)
class WorkList:
    """Everything about a list of folds that depends on their shapes only."""

    shapes: Tuple[FoldShape, ...]
    units: Tensor  # (n, UNIT_FIELDS) int64, on the device
    items: Dict[str, Tensor]  # kernel -> (n_items, ITEM_FIELDS) int64, on the device
    launches: Dict[str, lc.Launch]
    totals: Dict[str, int]  # kind -> elements of its flat buffer
    sizes: Dict[str, Tuple[Tuple[int, ...], ...]]  # kind -> each fold's tensor shape


def _kind_shapes(shape: FoldShape) -> Dict[str, Tuple[int, ...]]:
    O, C, I, A, A2, B, B2 = shape
    return {"K": (O, I, A + B - 1, A2 + B2 - 1), "d_later": (O, C, A, A2), "d_earlier": (C, I, B, B2)}


def _unit_items(shape: FoldShape, launch: Dict[str, lc.Launch]) -> Dict[str, Tuple[int, Tuple[int, int, int]]]:
    """A fold's items per kernel: the length of one item's loops (in tile steps) and the item
    grid ``(taps, m tiles, n tiles)``."""
    O, C, I, A, A2, B, B2 = shape
    f, bl, be = launch["fwd"], launch["bwd_later"], launch["bwd_earlier"]
    tiles = triton.cdiv
    return {
        "fwd": (min(A * A2, B * B2) * tiles(C, f["BC"]),
                ((A + B - 1) * (A2 + B2 - 1), tiles(O, f["BO"]), tiles(I, f["BI"]))),
        "bwd_later": (B * B2 * tiles(I, bl["BI"]), (A * A2, tiles(O, bl["BO"]), tiles(C, bl["BC"]))),
        "bwd_earlier": (A * A2 * tiles(O, be["BO"]), (B * B2, tiles(C, be["BC"]), tiles(I, be["BI"]))),
    }


def _items(units: Sequence[int], grids: Sequence[Tuple[int, int, int]]) -> Tensor:
    """Rows (unit, tap, tile m, tile n) of every unit's grid in turn, tap slowest; a fixed number
    of ops whatever the number of units (``ck_network.segment_positions``)."""
    outer, m, n = (torch.tensor([g[k] for g in grids], dtype=torch.int64) for k in range(3))
    unit, at = ck_network.segment_positions([a * b * c for a, b, c in grids])
    plane, cols = (m * n)[unit], n[unit]
    return torch.stack([torch.tensor(list(units), dtype=torch.int64)[unit], at // plane, at % plane // cols,
                        at % cols], 1)


def build_work_list(shapes: Tuple[FoldShape, ...], dtype: torch.dtype, device: torch.device) -> WorkList:
    launch = launches_for(*(max(s[k] for s in shapes) for k in range(3)), dtype)
    records, per_kernel = [], {name: [] for name in KERNELS}
    totals = dict.fromkeys(KINDS, 0)
    sizes = {kind: [] for kind in KINDS}
    for u, shape in enumerate(shapes):
        records.append([*shape, *(totals[kind] for kind in KINDS)] + [0] * (kernels.UNIT_FIELDS.value - 10))
        for kind, kind_shape in _kind_shapes(shape).items():
            totals[kind] += math.prod(kind_shape)
            sizes[kind].append(kind_shape)
        for name, (cost, grid) in _unit_items(shape, launch).items():
            per_kernel[name].append((cost, u, grid))
    units = torch.tensor(records, dtype=torch.int64).to(device)
    items = {}
    for name, rows in per_kernel.items():
        # The longest items first (as cl_worklist_ops): the short ones fill in behind them.
        rows = sorted(rows, key=lambda row: -row[0])
        items[name] = _items([u for _, u, _ in rows], [grid for _, _, grid in rows]).contiguous().to(device)
    return WorkList(shapes, units, items, launch, totals, {kind: tuple(s) for kind, s in sizes.items()})


_WORK_LISTS: Dict[tuple, WorkList] = {}  # bounded and pinned as cl_worklist_ops._WORK_LISTS
_PINNED_WORK_LISTS: set = set()


def work_list(shapes: Tuple[FoldShape, ...], dtype: torch.dtype, device: torch.device) -> WorkList:
    key = (shapes, dtype, device)
    found = _WORK_LISTS.get(key)
    if found is None:
        if cl_worklist_ops._capturing(device):
            raise RuntimeError("ck_network: these fold shapes were not composed before the CUDA-graph capture; "
                               "run a warm-up step first (the work list is built and copied on first use)")
        found = build_work_list(shapes, dtype, device)
        caches.remember(_WORK_LISTS, key, found, caches.WORK_LIST_CACHE_SIZE, _PINNED_WORK_LISTS)
    elif cl_worklist_ops._capturing(device):
        _PINNED_WORK_LISTS.add(key)
    return found


def _shapes(laters: Sequence[Tensor], earliers: Sequence[Tensor]) -> Tuple[FoldShape, ...]:
    return tuple((int(l.shape[0]), int(l.shape[1]), int(e.shape[1]), int(l.shape[2]), int(l.shape[3]),
                  int(e.shape[2]), int(e.shape[3])) for l, e in zip(laters, earliers))


def _setup(laters, earliers, grads=None):
    """Contiguous operands, their work list and address table (later, earlier, grad per row)."""
    laters = [t.contiguous() for t in laters]
    earliers = [t.contiguous() for t in earliers]
    grads = [t.contiguous() for t in grads] if grads is not None else [None] * len(laters)
    ref = laters[0]
    work = work_list(_shapes(laters, earliers), ref.dtype, ref.device)
    rows = [(l, e, g, None, None, None) for l, e, g in zip(laters, earliers, grads)]
    return work, cl_worklist_ops.address_table(rows, ref.device), (laters, earliers, grads)


def _wide(work: WorkList, *tensors) -> bool:
    """64-bit offsets when any operand, any flat buffer or the work list itself is large."""
    largest_flat = max(work.totals.values())
    return largest_flat >= offsets.WIDE_ELEMENTS or offsets.needs_wide_offsets(work.units, *work.items.values(),
                                                                                *tensors)


def _launch(kernel, work: WorkList, name: str, table: Tensor, out: Tensor, **modes) -> None:
    items = work.items[name]
    if items.shape[0]:
        kernel[(items.shape[0],)](table, work.units, items, out, **modes, **work.launches[name].kwargs())


def _check(laters: Sequence[Tensor], earliers: Sequence[Tensor]) -> None:
    torch._check(len(laters) == len(earliers) and len(laters) > 0, lambda: "ck_network: one earlier per later")


@torch.library.custom_op("expandnets::triton_ck_network_fold", mutates_args=())
def ck_network_fold(laters: List[Tensor], earliers: List[Tensor]) -> Tensor:
    """Flat ``K`` of every fold ``(later, earlier)`` in turn, each ``(O, I, A+B-1, A2+B2-1)``."""
    _check(laters, earliers)
    work, table, (laters, earliers, _) = _setup(laters, earliers)
    ref = laters[0]
    out = torch.empty(work.totals["K"], device=ref.device, dtype=ref.dtype)
    modes = dict(ACC=lc.acc_type(ref.dtype), WIDE=_wide(work, *laters, *earliers))
    _launch(kernels.ck_network_fold_fwd_kernel, work, "fwd", table, out, **modes)
    return out


def _flat_size(shapes: Sequence[Tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes)


@ck_network_fold.register_fake
def _ck_network_fold_fake(laters, earliers):
    shapes = [_kind_shapes(s)["K"] for s in _shapes(laters, earliers)]
    return laters[0].new_empty(_flat_size(shapes))


@torch.library.custom_op("expandnets::triton_ck_network_fold_backward", mutates_args=())
def ck_network_fold_backward(grads: List[Tensor], laters: List[Tensor],
                          earliers: List[Tensor]) -> Tuple[Tensor, Tensor]:
    """Flat ``d later`` and flat ``d earlier`` of every fold, from each folded kernel's gradient."""
    _check(laters, earliers)
    work, table, (laters, earliers, grads) = _setup(laters, earliers, grads)
    ref = laters[0]
    d_later = torch.empty(work.totals["d_later"], device=ref.device, dtype=ref.dtype)
    d_earlier = torch.empty(work.totals["d_earlier"], device=ref.device, dtype=ref.dtype)
    modes = dict(ACC=lc.acc_type(ref.dtype), WIDE=_wide(work, *grads, *laters, *earliers))
    _launch(kernels.ck_network_fold_bwd_later_kernel, work, "bwd_later", table, d_later, **modes)
    _launch(kernels.ck_network_fold_bwd_earlier_kernel, work, "bwd_earlier", table, d_earlier, **modes)
    return d_later, d_earlier


@ck_network_fold_backward.register_fake
def _ck_network_fold_backward_fake(grads, laters, earliers):
    return laters[0].new_empty(_flat_size([t.shape for t in laters])), \
        laters[0].new_empty(_flat_size([t.shape for t in earliers]))


def _split(flat: Tensor, shapes: Sequence[Tuple[int, ...]]) -> List[Tensor]:
    return [chunk.view(shape) for chunk, shape in zip(flat.split([math.prod(s) for s in shapes]), shapes)]


def fold_network(pairs: Sequence[Tuple[Tensor, Tensor]]) -> List[Tensor]:
    """``NetworkFolds.forward``: the folded kernel of every ``(later, earlier)``, views of one buffer."""
    laters, earliers = [p[0] for p in pairs], [p[1] for p in pairs]
    flat = ck_network_fold(laters, earliers)
    return _split(flat, [_kind_shapes(s)["K"] for s in _shapes(laters, earliers)])


def fold_network_backward(pairs: Sequence[Tuple[Tensor, Tensor]], dks: Sequence[Tensor]):
    """``NetworkFolds.backward``: ``(d later, d earlier)`` of every fold, views of two buffers."""
    laters, earliers = [p[0] for p in pairs], [p[1] for p in pairs]
    d_later, d_earlier = ck_network_fold_backward(list(dks), laters, earliers)
    return list(zip(_split(d_later, [t.shape for t in laters]), _split(d_earlier, [t.shape for t in earliers])))


TRITON_NETWORK_FOLDS = ck_network.NetworkFolds(fold_network, fold_network_backward)


def compose_ck_network(units) -> List[Tuple[Tensor, Tensor]]:
    """``ck_network``: ``units`` a sequence of ``(weights, biases or None)`` -> each unit's ``(K, b or None)``
    (``ck_network.compose_ck_network`` with the work-list folds; no double backward)."""
    return ck_network.compose_ck_network(units, TRITON_NETWORK_FOLDS)
