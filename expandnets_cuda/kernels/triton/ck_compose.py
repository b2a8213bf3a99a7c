"""Triton kernels for one CK fold: the kernel of ``conv(conv(x, E), L)`` (both stride 1),
``K[o, i, v + u] = sum_c L[o, c, v] @ E[c, i, u]`` over 2-D taps, and its two gradients.

Layouts are ``nn.Conv2d``'s, contiguous: ``L (O, C, a, a2)``, ``E (C, I, b, b2)``,
``K (O, I, a+b-1, a2+b2-1)``. One program owns one output tap and a tile of (rows, cols); it loops
over the tap pairs that land there, so nothing is written twice and no atomics are needed. The
per-tile bodies are `@triton.jit` functions the work-list kernels (ck_worklist.py) call too.
``WIDE`` switches the index arithmetic to int64 (offsets.py).
"""
import triton
import triton.language as tl

from expandnets_cuda.kernels.triton.offsets import program_ids, widen


@triton.jit
def fold_fwd_tile(later, earlier, dst, w, offs_o, offs_i, O, C, I, A, A2, B, B2,
                  BC: tl.constexpr, ACC: tl.constexpr):
    """Output tap ``w`` of ``K`` for the (o, i) tile: ``K[:, :, w] = sum_{v + u = w} L[:, :, v] @ E[:, :, u]``,
    stored at ``dst`` (shared by the one-fold and the work-list kernels)."""
    WX = A2 + B2 - 1
    wy, wx = w // WX, w % WX
    acc = tl.zeros((offs_o.shape[0], offs_i.shape[0]), dtype=ACC)
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
             acc.to(dst.dtype.element_ty), mask=(offs_o[:, None] < O) & (offs_i[None, :] < I))


@triton.jit
def fold_bwd_later_tile(grad, earlier, dst, v, offs_o, offs_c, O, C, I, A, A2, B, B2,
                        BI: tl.constexpr, ACC: tl.constexpr):
    """Tap ``v`` of ``dL`` for the (o, c) tile: ``dL[o, c, v] = sum_u sum_i dK[o, i, v + u] E[c, i, u]``."""
    vy, vx = v // A2, v % A2
    KH, KW = A + B - 1, A2 + B2 - 1
    acc = tl.zeros((offs_o.shape[0], offs_c.shape[0]), dtype=ACC)
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
             acc.to(dst.dtype.element_ty), mask=(offs_o[:, None] < O) & (offs_c[None, :] < C))


@triton.jit
def fold_bwd_earlier_tile(grad, later, dst, u, offs_c, offs_i, O, C, I, A, A2, B, B2,
                          BO: tl.constexpr, ACC: tl.constexpr):
    """Tap ``u`` of ``dE`` for the (c, i) tile: ``dE[c, i, u] = sum_v sum_o L[o, c, v] dK[o, i, v + u]``."""
    uy, ux = u // B2, u % B2
    KH, KW = A + B - 1, A2 + B2 - 1
    acc = tl.zeros((offs_c.shape[0], offs_i.shape[0]), dtype=ACC)
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
             acc.to(dst.dtype.element_ty), mask=(offs_c[:, None] < C) & (offs_i[None, :] < I))


@triton.jit
def ck_fold_fwd_kernel(later, earlier, out, O, C, I, A, A2, B, B2,
                       BO: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    w, pid_o, pid_i = program_ids(WIDE)
    O, C, I, A, A2, B, B2 = (widen(O, WIDE), widen(C, WIDE), widen(I, WIDE), widen(A, WIDE), widen(A2, WIDE),
                             widen(B, WIDE), widen(B2, WIDE))
    fold_fwd_tile(later, earlier, out, w, pid_o * BO + tl.arange(0, BO), pid_i * BI + tl.arange(0, BI),
                  O, C, I, A, A2, B, B2, BC, ACC)


@triton.jit
def ck_fold_bwd_later_kernel(grad, earlier, d_later, O, C, I, A, A2, B, B2,
                             BO: tl.constexpr, BC: tl.constexpr, BI: tl.constexpr, ACC: tl.constexpr,
                             WIDE: tl.constexpr):
    """``dL[o, c, v] = sum_u sum_i dK[o, i, v + u] E[c, i, u]``."""
    v, pid_o, pid_c = program_ids(WIDE)
    O, C, I, A, A2, B, B2 = (widen(O, WIDE), widen(C, WIDE), widen(I, WIDE), widen(A, WIDE), widen(A2, WIDE),
                             widen(B, WIDE), widen(B2, WIDE))
    fold_bwd_later_tile(grad, earlier, d_later, v, pid_o * BO + tl.arange(0, BO), pid_c * BC + tl.arange(0, BC),
                        O, C, I, A, A2, B, B2, BI, ACC)


@triton.jit
def ck_fold_bwd_earlier_kernel(grad, later, d_earlier, O, C, I, A, A2, B, B2,
                               BC: tl.constexpr, BI: tl.constexpr, BO: tl.constexpr, ACC: tl.constexpr,
                               WIDE: tl.constexpr):
    """``dE[c, i, u] = sum_v sum_o L[o, c, v] dK[o, i, v + u]``."""
    u, pid_c, pid_i = program_ids(WIDE)
    O, C, I, A, A2, B, B2 = (widen(O, WIDE), widen(C, WIDE), widen(I, WIDE), widen(A, WIDE), widen(A2, WIDE),
                             widen(B, WIDE), widen(B2, WIDE))
    fold_bwd_earlier_tile(grad, later, d_earlier, u, pid_c * BC + tl.arange(0, BC), pid_i * BI + tl.arange(0, BI),
                          O, C, I, A, A2, B, B2, BO, ACC)
