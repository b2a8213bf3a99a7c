"""Work-list kernels: the CL/FC composition of many units of *different* shapes in one launch.

Each program takes one item of a work list (``cl_worklist_ops.WorkList``): which unit, which group
(and tap), which output tile. A unit's sizes and its offsets into the flat output buffers are read
from a per-unit record, its parameters through a table of their addresses (int64, one row per
unit: w1, w2, w3, b1, b2, b3), so the units' tensors are never copied together. The math per tile
is that of ``cl_compose.py``, whose tile functions the forward, bias and dW1 kernels call (canonical
layouts ``W1 (G, A, I)``, ``W2 (G, C, A, T)``, ``W3 (G, O, C)``, ``W (G, O, I, T)``; chained
products in registers, exact IEEE dots, float32 or float64 accumulation); the bias fold's
backward is folded into the dW2/dW3 programs (its rank-one terms reuse the W3 and W2 tiles those
load anyway) plus one small db1/db2 kernel.

Metadata is stored as int64; a narrow launch (``WIDE`` clear, every extent below 2**30) narrows
each entry to int32 on load so its index arithmetic stays 32-bit, a wide one keeps int64
(offsets.py). The metadata pointers are cast to int64 pointers in the kernel, so the sm_90 gate,
which types every pointer by the weight dtype, compiles the same code that runs.
"""
import triton
import triton.language as tl

from expandnets_cuda.kernels.triton.cl_compose import _grad_times_w1t, bias_fold_tile, bwd_w1_tile, fwd_tile
from expandnets_cuda.kernels.triton.offsets import widen

# Record layouts shared with cl_worklist_ops (a module constant a @triton.jit function may read).
UNIT_FIELDS = tl.constexpr(16)  # G, A, I, C, O, T, then element offsets: W, b, W1, W2, W3, b1, b2
ITEM_FIELDS = tl.constexpr(4)   # unit, group (or group * T + tap), tile m, tile n
TABLE_FIELDS = tl.constexpr(6)  # addresses of w1, w2, w3, b1, b2, b3


@triton.jit
def _int64_pointer(p):
    return p.to(tl.pointer_type(tl.int64), bitcast=True)


@triton.jit
def _entry(ptr, WIDE: tl.constexpr):
    """One metadata entry, int32 on a narrow launch (it fits: the wrapper checked every extent)."""
    value = tl.load(ptr)
    if WIDE:
        return value
    else:
        return value.to(tl.int32)


@triton.jit
def _item(items, WIDE: tl.constexpr):
    """This program's item: (unit, outer index, tile m, tile n)."""
    # Parenthesised offsets: ``ptr + at + 1`` would add the literal as a separate int32 offset.
    row, at = _int64_pointer(items), widen(tl.program_id(0), WIDE) * ITEM_FIELDS
    return (_entry(row + at, WIDE), _entry(row + (at + 1), WIDE), _entry(row + (at + 2), WIDE),
            _entry(row + (at + 3), WIDE))


@triton.jit
def _sizes(units, u, WIDE: tl.constexpr):
    """Unit ``u``'s G, A, I, C, O, T."""
    row, at = _int64_pointer(units), u * UNIT_FIELDS
    return (_entry(row + at, WIDE), _entry(row + (at + 1), WIDE), _entry(row + (at + 2), WIDE),
            _entry(row + (at + 3), WIDE), _entry(row + (at + 4), WIDE), _entry(row + (at + 5), WIDE))


@triton.jit
def _offset(units, u, field, WIDE: tl.constexpr):
    """Unit ``u``'s element offset number ``field`` (6: W, 7: b, 8: W1, 9: W2, 10: W3, 11: b1, 12: b2)."""
    return _entry(_int64_pointer(units) + (u * UNIT_FIELDS + field), WIDE)


@triton.jit
def _param(table, u, k, like):
    """Unit ``u``'s parameter ``k`` (0..5: w1, w2, w3, b1, b2, b3) as a pointer of ``like``'s type."""
    return tl.load(_int64_pointer(table) + (u * TABLE_FIELDS + k)).to(tl.pointer_type(like.dtype.element_ty))


@triton.jit
def cl_network_fwd_kernel(table, units, items, out, BO: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr,
                       BA: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, g * T + t, o tile, i tile): ``W[g, o, i, t] = W3[g] @ (W2[g, :, :, t] @ W1[g])``."""
    u, gt, pid_o, pid_i = _item(items, WIDE)
    G, A, I, C, O, T = _sizes(units, u, WIDE)
    w1, w2, w3 = _param(table, u, 0, out), _param(table, u, 1, out), _param(table, u, 2, out)
    fwd_tile(w1, w2, w3, out + _offset(units, u, 6, WIDE), gt // T, gt % T, pid_o * BO + tl.arange(0, BO),
             pid_i * BI + tl.arange(0, BI), A, I, C, O, T, BC, BA, ACC)


@triton.jit
def cl_network_bias_kernel(table, units, items, out, BO: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                        ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, g, o tile, -): ``b[g] = W3[g] @ (sum_t W2[g, :, :, t] @ b1[g] + b2[g]) + b3[g]``."""
    u, g, pid_o, _ = _item(items, WIDE)
    G, A, I, C, O, T = _sizes(units, u, WIDE)
    w2, w3 = _param(table, u, 1, out), _param(table, u, 2, out)
    b1, b2, b3 = _param(table, u, 3, out), _param(table, u, 4, out), _param(table, u, 5, out)
    bias_fold_tile(w2, w3, b1, b2, b3, out + _offset(units, u, 7, WIDE), g, pid_o * BO + tl.arange(0, BO),
                   A, C, O, T, BC, BK, ACC)


@triton.jit
def cl_network_bwd_w1_kernel(table, units, items, grad, dw1, BA: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr,
                          BO: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, g, a tile, i tile): ``dW1[g] = sum_t W2[g, :, :, t]^T @ (W3[g]^T @ dW[g, :, :, t])``.
    (The bias fold's W1 does not enter: b depends on b1, not on W1.)"""
    u, g, pid_a, pid_i = _item(items, WIDE)
    G, A, I, C, O, T = _sizes(units, u, WIDE)
    w2, w3 = _param(table, u, 1, dw1), _param(table, u, 2, dw1)
    bwd_w1_tile(grad + _offset(units, u, 6, WIDE), w2, w3, dw1 + _offset(units, u, 8, WIDE), g,
                pid_a * BA + tl.arange(0, BA), pid_i * BI + tl.arange(0, BI), A, I, C, O, T, BC, BO, ACC)


@triton.jit
def cl_network_bwd_w2_kernel(table, units, items, grad, grad_b, dw2, BC: tl.constexpr, BA: tl.constexpr,
                          BO: tl.constexpr, BI: tl.constexpr, ACC: tl.constexpr, HAS_BIAS: tl.constexpr,
                          WIDE: tl.constexpr):
    """Item (unit, g * T + t, c tile, a tile): ``dW2[g, :, :, t] = W3[g]^T @ (dW[g, :, :, t] @ W1[g]^T)``,
    plus the bias fold's ``(W3[g]^T db[g]) b1[g]^T`` (the same for every tap)."""
    u, gt, pid_c, pid_a = _item(items, WIDE)
    G, A, I, C, O, T = _sizes(units, u, WIDE)
    w1, w3 = _param(table, u, 0, dw2), _param(table, u, 2, dw2)
    grad = grad + _offset(units, u, 6, WIDE)
    dst = dw2 + _offset(units, u, 9, WIDE)
    gb_u, b1 = grad_b + _offset(units, u, 7, WIDE), _param(table, u, 3, dw2)  # read only with a bias
    g, t = gt // T, gt % T
    offs_c = pid_c * BC + tl.arange(0, BC)
    offs_a = pid_a * BA + tl.arange(0, BA)
    acc = tl.zeros((BC, BA), dtype=ACC)
    d_inner = tl.zeros((BC,), dtype=ACC)  # (W3^T db)[offs_c]: the bias path's gradient at W2 @ b1 + b2
    for o0 in range(0, O, BO):
        offs_o = o0 + tl.arange(0, BO)
        inner = _grad_times_w1t(grad, w1, g, t, offs_o, offs_a, A, I, O, T, BI, ACC)
        b3t = tl.load(w3 + g * O * C + offs_c[:, None] + offs_o[None, :] * C,
                      mask=(offs_c[:, None] < C) & (offs_o[None, :] < O), other=0.0).to(ACC)
        acc += tl.dot(b3t, inner, input_precision="ieee")
        if HAS_BIAS:
            gb = tl.load(gb_u + g * O + offs_o, mask=offs_o < O, other=0.0)
            d_inner += tl.sum(b3t * gb.to(ACC)[None, :], axis=1)
    if HAS_BIAS:
        vb1 = tl.load(b1 + g * A + offs_a, mask=offs_a < A, other=0.0).to(ACC)
        acc += d_inner[:, None] * vb1[None, :]
    tl.store(dst + g * C * A * T + offs_c[:, None] * (A * T) + offs_a[None, :] * T + t,
             acc.to(dw2.dtype.element_ty), mask=(offs_c[:, None] < C) & (offs_a[None, :] < A))


@triton.jit
def cl_network_bwd_w3_kernel(table, units, items, grad, grad_b, dw3, BO: tl.constexpr, BC: tl.constexpr,
                          BA: tl.constexpr, BI: tl.constexpr, ACC: tl.constexpr, HAS_BIAS: tl.constexpr,
                          WIDE: tl.constexpr):
    """Item (unit, g, o tile, c tile): ``dW3[g] = sum_t (dW[g, :, :, t] @ W1[g]^T) @ W2[g, :, :, t]^T``,
    plus the bias fold's ``db[g] (sum_t W2[g, :, :, t] @ b1[g] + b2[g])^T``, whose vector gathers
    from the W2 tiles the main product walks anyway."""
    u, g, pid_o, pid_c = _item(items, WIDE)
    G, A, I, C, O, T = _sizes(units, u, WIDE)
    w1, w2 = _param(table, u, 0, dw3), _param(table, u, 1, dw3)
    grad = grad + _offset(units, u, 6, WIDE)
    dst = dw3 + _offset(units, u, 10, WIDE)
    b1, b2 = _param(table, u, 3, dw3), _param(table, u, 4, dw3)  # read only with a bias
    offs_o = pid_o * BO + tl.arange(0, BO)
    offs_c = pid_c * BC + tl.arange(0, BC)
    acc = tl.zeros((BO, BC), dtype=ACC)
    folded = tl.zeros((BC,), dtype=ACC)  # (sum_t W2_t b1)[offs_c]
    for t in range(0, T):
        for a0 in range(0, A, BA):
            offs_a = a0 + tl.arange(0, BA)
            inner = _grad_times_w1t(grad, w1, g, t, offs_o, offs_a, A, I, O, T, BI, ACC)
            b2t = tl.load(w2 + g * C * A * T + offs_a[:, None] * T + offs_c[None, :] * (A * T) + t,
                          mask=(offs_a[:, None] < A) & (offs_c[None, :] < C), other=0.0).to(ACC)
            acc += tl.dot(inner, b2t, input_precision="ieee")
            if HAS_BIAS:
                vb1 = tl.load(b1 + g * A + offs_a, mask=offs_a < A, other=0.0)
                folded += tl.sum(b2t * vb1.to(ACC)[:, None], axis=0)
    if HAS_BIAS:
        folded += tl.load(b2 + g * C + offs_c, mask=offs_c < C, other=0.0).to(ACC)
        gb = tl.load(grad_b + _offset(units, u, 7, WIDE) + g * O + offs_o, mask=offs_o < O, other=0.0).to(ACC)
        acc += gb[:, None] * folded[None, :]
    tl.store(dst + g * O * C + offs_o[:, None] * C + offs_c[None, :], acc.to(dw3.dtype.element_ty),
             mask=(offs_o[:, None] < O) & (offs_c[None, :] < C))


@triton.jit
def cl_network_bias_bwd_kernel(table, units, items, grad_b, db1, db2, BA: tl.constexpr, BC: tl.constexpr,
                            BO: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """Item (unit, g, a tile, -): ``db2[g] = W3[g]^T db[g]`` (stored by the a tile 0 programs) and
    ``db1[g] = sum_t W2[g, :, :, t]^T db2[g]``. (``db3 = db``: no kernel.)"""
    u, g, pid_a, _ = _item(items, WIDE)
    G, A, I, C, O, T = _sizes(units, u, WIDE)
    w2, w3 = _param(table, u, 1, db1), _param(table, u, 2, db1)
    gb_u = grad_b + _offset(units, u, 7, WIDE)
    offs_a = pid_a * BA + tl.arange(0, BA)
    acc = tl.zeros((BA,), dtype=ACC)
    for c0 in range(0, C, BC):
        offs_c = c0 + tl.arange(0, BC)
        d_inner = tl.zeros((BC,), dtype=ACC)
        for o0 in range(0, O, BO):
            offs_o = o0 + tl.arange(0, BO)
            w3t = tl.load(w3 + g * O * C + offs_c[:, None] + offs_o[None, :] * C,
                          mask=(offs_c[:, None] < C) & (offs_o[None, :] < O), other=0.0).to(ACC)
            gb = tl.load(gb_u + g * O + offs_o, mask=offs_o < O, other=0.0).to(ACC)
            d_inner += tl.sum(w3t * gb[None, :], axis=1)
        if pid_a == 0:
            tl.store(db2 + _offset(units, u, 12, WIDE) + g * C + offs_c, d_inner.to(db2.dtype.element_ty),
                     mask=offs_c < C)
        for t in range(0, T):
            tile = tl.load(w2 + g * C * A * T + offs_c[:, None] * (A * T) + offs_a[None, :] * T + t,
                           mask=(offs_c[:, None] < C) & (offs_a[None, :] < A), other=0.0).to(ACC)
            acc += tl.sum(tile * d_inner[:, None], axis=0)
    tl.store(db1 + _offset(units, u, 11, WIDE) + g * A + offs_a, acc.to(db1.dtype.element_ty), mask=offs_a < A)
