"""Work-list kernels: one CK fold level of many units (of *different* shapes) in one launch.

Each program takes one item of a work list (``ck_worklist_ops.WorkList``): which unit, which tap,
which output tile. A unit's extents and its offsets into the flat output buffers come from a
per-unit record, its operands (``later``, ``earlier``, and in backward the folded kernel's
gradient) through a table of their addresses, so nothing is copied together. The math per tile is
that of ``ck_compose.py``: ``K[o, i, v + u] = sum_c L[o, c, v] E[c, i, u]`` (contiguous
``nn.Conv2d`` layouts), exact IEEE dots, float32 or float64 accumulation; each program owns its
output tile, so nothing is written twice and no atomics are needed.

Metadata is int64, narrowed to int32 on a narrow launch (``WIDE`` clear), as in ``cl_worklist``.
"""
import triton
import triton.language as tl

from .cl_worklist import UNIT_FIELDS, _entry, _int64_pointer, _item, _offset, _param  # noqa: F401

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
def ck_many_fold_fwd_kernel(table, units, items, out, BO: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr,
                            ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, output tap w, o tile, i tile): ``K[:, :, w] = sum_{v + u = w} L[:, :, v] @ E[:, :, u]``."""
    u, w, pid_o, pid_i = _item(items, WIDE)
    O, C, I, A, A2, B, B2 = _dims(units, u, WIDE)
    later, earlier = _param(table, u, 0, out), _param(table, u, 1, out)
    dst = out + _offset(units, u, K_FIELD, WIDE)
    WX = A2 + B2 - 1
    wy, wx = w // WX, w % WX
    offs_o = pid_o * BO + tl.arange(0, BO)
    offs_i = pid_i * BI + tl.arange(0, BI)
    acc = tl.zeros((BO, BI), dtype=ACC)
    # Only the taps v of L that meet a tap u = w - v of E: no masked-out iterations.
    for vy in range(tl.maximum(wy - B + 1, 0), tl.minimum(wy + 1, A)):
        for vx in range(tl.maximum(wx - B2 + 1, 0), tl.minimum(wx + 1, A2)):
            uy, ux = wy - vy, wx - vx
            for c0 in range(0, C, BC):
                offs_c = c0 + tl.arange(0, BC)
                tile_l = tl.load(later + offs_o[:, None] * (C * A * A2) + offs_c[None, :] * (A * A2) + vy * A2 + vx,
                                 mask=(offs_o[:, None] < O) & (offs_c[None, :] < C), other=0.0)
                tile_e = tl.load(earlier + offs_c[:, None] * (I * B * B2) + offs_i[None, :] * (B * B2) + uy * B2 + ux,
                                 mask=(offs_c[:, None] < C) & (offs_i[None, :] < I), other=0.0)
                acc += tl.dot(tile_l.to(ACC), tile_e.to(ACC), input_precision="ieee")
    KH, KW = A + B - 1, A2 + B2 - 1
    tl.store(dst + offs_o[:, None] * (I * KH * KW) + offs_i[None, :] * (KH * KW) + wy * KW + wx,
             acc.to(out.dtype.element_ty), mask=(offs_o[:, None] < O) & (offs_i[None, :] < I))


@triton.jit
def ck_many_fold_bwd_later_kernel(table, units, items, d_later, BO: tl.constexpr, BC: tl.constexpr,
                                  BI: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, tap v of L, o tile, c tile): ``dL[o, c, v] = sum_u sum_i dK[o, i, v + u] E[c, i, u]``."""
    u, v, pid_o, pid_c = _item(items, WIDE)
    O, C, I, A, A2, B, B2 = _dims(units, u, WIDE)
    earlier, grad = _param(table, u, 1, d_later), _param(table, u, 2, d_later)
    dst = d_later + _offset(units, u, D_LATER_FIELD, WIDE)
    vy, vx = v // A2, v % A2
    KH, KW = A + B - 1, A2 + B2 - 1
    offs_o = pid_o * BO + tl.arange(0, BO)
    offs_c = pid_c * BC + tl.arange(0, BC)
    acc = tl.zeros((BO, BC), dtype=ACC)
    for uy in range(0, B):
        for ux in range(0, B2):
            for i0 in range(0, I, BI):
                offs_i = i0 + tl.arange(0, BI)
                tile_g = tl.load(grad + offs_o[:, None] * (I * KH * KW) + offs_i[None, :] * (KH * KW)
                                 + (vy + uy) * KW + (vx + ux),
                                 mask=(offs_o[:, None] < O) & (offs_i[None, :] < I), other=0.0)
                tile_et = tl.load(earlier + offs_i[:, None] * (B * B2) + offs_c[None, :] * (I * B * B2) + uy * B2 + ux,
                                  mask=(offs_i[:, None] < I) & (offs_c[None, :] < C), other=0.0)
                acc += tl.dot(tile_g.to(ACC), tile_et.to(ACC), input_precision="ieee")
    tl.store(dst + offs_o[:, None] * (C * A * A2) + offs_c[None, :] * (A * A2) + vy * A2 + vx,
             acc.to(d_later.dtype.element_ty), mask=(offs_o[:, None] < O) & (offs_c[None, :] < C))


@triton.jit
def ck_many_fold_bwd_earlier_kernel(table, units, items, d_earlier, BC: tl.constexpr, BI: tl.constexpr,
                                    BO: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, tap u of E, c tile, i tile): ``dE[c, i, u] = sum_v sum_o L[o, c, v] dK[o, i, v + u]``."""
    un, t, pid_c, pid_i = _item(items, WIDE)
    O, C, I, A, A2, B, B2 = _dims(units, un, WIDE)
    later, grad = _param(table, un, 0, d_earlier), _param(table, un, 2, d_earlier)
    dst = d_earlier + _offset(units, un, D_EARLIER_FIELD, WIDE)
    uy, ux = t // B2, t % B2
    KH, KW = A + B - 1, A2 + B2 - 1
    offs_c = pid_c * BC + tl.arange(0, BC)
    offs_i = pid_i * BI + tl.arange(0, BI)
    acc = tl.zeros((BC, BI), dtype=ACC)
    for vy in range(0, A):
        for vx in range(0, A2):
            for o0 in range(0, O, BO):
                offs_o = o0 + tl.arange(0, BO)
                tile_lt = tl.load(later + offs_c[:, None] * (A * A2) + offs_o[None, :] * (C * A * A2) + vy * A2 + vx,
                                  mask=(offs_c[:, None] < C) & (offs_o[None, :] < O), other=0.0)
                tile_g = tl.load(grad + offs_o[:, None] * (I * KH * KW) + offs_i[None, :] * (KH * KW)
                                 + (vy + uy) * KW + (vx + ux),
                                 mask=(offs_o[:, None] < O) & (offs_i[None, :] < I), other=0.0)
                acc += tl.dot(tile_lt.to(ACC), tile_g.to(ACC), input_precision="ieee")
    tl.store(dst + offs_c[:, None] * (I * B * B2) + offs_i[None, :] * (B * B2) + uy * B2 + ux,
             acc.to(d_earlier.dtype.element_ty), mask=(offs_c[:, None] < C) & (offs_i[None, :] < I))
