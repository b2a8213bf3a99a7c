"""Work-list kernels: one CK fold level of many units (of *different* shapes) in one launch.

Each program takes one item of a work list (``ck_worklist_ops.WorkList``): which unit, which tap,
which output tile. A unit's extents and its offsets into the flat output buffers come from a
per-unit record, its operands (``later``, ``earlier``, and in backward the folded kernel's
gradient) through a table of their addresses, so nothing is copied together. The math per tile is
that of ``ck_compose.py`` (its tile functions, shared): ``K[o, i, v + u] = sum_c L[o, c, v] E[c, i, u]`` (contiguous
``nn.Conv2d`` layouts), exact IEEE dots, float32 or float64 accumulation; each program owns its
output tile, so nothing is written twice and no atomics are needed.

Metadata is int64, narrowed to int32 on a narrow launch (``WIDE`` clear), as in ``cl_worklist``.
"""
import triton
import triton.language as tl

from expandnets_cuda.kernels.triton.ck_compose import fold_bwd_earlier_tile, fold_bwd_later_tile, fold_fwd_tile
from expandnets_cuda.kernels.triton.cl_worklist import UNIT_FIELDS, _entry, _int64_pointer, _item, _offset, _param  # noqa: F401

# Unit record: O, C, I, A, A2, B, B2 (L (O, C, A, A2), E (C, I, B, B2)), then element offsets of
# the unit's K, d later, d earlier in their flat buffers. Table row: later, earlier, grad.
K_FIELD, D_LATER_FIELD, D_EARLIER_FIELD = tl.constexpr(7), tl.constexpr(8), tl.constexpr(9)


@triton.jit
def _dims(units, u, WIDE: tl.constexpr):
    row, at = _int64_pointer(units), u * UNIT_FIELDS
    return (_entry(row + at, WIDE), _entry(row + (at + 1), WIDE), _entry(row + (at + 2), WIDE),
            _entry(row + (at + 3), WIDE), _entry(row + (at + 4), WIDE), _entry(row + (at + 5), WIDE),
            _entry(row + (at + 6), WIDE))


@triton.jit
def ck_network_fold_fwd_kernel(table, units, items, out, BO: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr,
                            ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, output tap w, o tile, i tile): ``K[:, :, w] = sum_{v + u = w} L[:, :, v] @ E[:, :, u]``."""
    u, w, pid_o, pid_i = _item(items, WIDE)
    O, C, I, A, A2, B, B2 = _dims(units, u, WIDE)
    later, earlier = _param(table, u, 0, out), _param(table, u, 1, out)
    fold_fwd_tile(later, earlier, out + _offset(units, u, K_FIELD, WIDE), w, pid_o * BO + tl.arange(0, BO),
                  pid_i * BI + tl.arange(0, BI), O, C, I, A, A2, B, B2, BC, ACC)


@triton.jit
def ck_network_fold_bwd_later_kernel(table, units, items, d_later, BO: tl.constexpr, BC: tl.constexpr,
                                  BI: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, tap v of L, o tile, c tile): ``dL[o, c, v] = sum_u sum_i dK[o, i, v + u] E[c, i, u]``."""
    u, v, pid_o, pid_c = _item(items, WIDE)
    O, C, I, A, A2, B, B2 = _dims(units, u, WIDE)
    earlier, grad = _param(table, u, 1, d_later), _param(table, u, 2, d_later)
    fold_bwd_later_tile(grad, earlier, d_later + _offset(units, u, D_LATER_FIELD, WIDE), v,
                        pid_o * BO + tl.arange(0, BO), pid_c * BC + tl.arange(0, BC), O, C, I, A, A2, B, B2, BI, ACC)


@triton.jit
def ck_network_fold_bwd_earlier_kernel(table, units, items, d_earlier, BC: tl.constexpr, BI: tl.constexpr,
                                    BO: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, tap u of E, c tile, i tile): ``dE[c, i, u] = sum_v sum_o L[o, c, v] dK[o, i, v + u]``."""
    un, t, pid_c, pid_i = _item(items, WIDE)
    O, C, I, A, A2, B, B2 = _dims(units, un, WIDE)
    later, grad = _param(table, un, 0, d_earlier), _param(table, un, 2, d_earlier)
    fold_bwd_earlier_tile(grad, later, d_earlier + _offset(units, un, D_EARLIER_FIELD, WIDE), t,
                          pid_c * BC + tl.arange(0, BC), pid_i * BI + tl.arange(0, BI), O, C, I, A, A2, B, B2,
                          BO, ACC)
