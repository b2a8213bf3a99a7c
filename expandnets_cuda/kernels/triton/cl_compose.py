"""Triton kernels for CL (and FC) composition: ``W[g, o, i, t] = W3[g] @ W2[g, :, :, t] @ W1[g]``.

Layouts are the sub-layers' own, contiguous: ``W1 (G, A, I)``, ``W2 (G, C, A, T)`` (taps
innermost, as ``nn.Conv2d`` stores them), ``W3 (G, O, C)``, ``W (G, O, I, T)``. FC is the same
with ``G = T = 1``. Each kernel chains its two products inside one program: the intermediate
(``W2 @ W1`` or its gradient counterpart) lives in registers, never in memory. Accumulation is
float32 (float64 for float64 weights) and the dots run in exact IEEE mode: the composition is
weight-sized, so exactness costs nothing measurable.
``WIDE`` switches the index arithmetic to int64 (offsets.py).
"""
import triton
import triton.language as tl

from expandnets_cuda.kernels.triton.offsets import program_ids, widen


@triton.jit
def fwd_tile(w1, w2, w3, dst, g, t, offs_o, offs_i, A, I, C, O, T, BC: tl.constexpr, BA: tl.constexpr,
             ACC: tl.constexpr):
    """The (o, i) tile of ``W[g, :, :, t] = W3[g] @ (W2[g, :, :, t] @ W1[g])``, stored at ``dst``
    (shared by the one-call and the work-list kernels)."""
    acc = tl.zeros((offs_o.shape[0], offs_i.shape[0]), dtype=ACC)
    for c0 in range(0, C, BC):
        offs_c = c0 + tl.arange(0, BC)
        inner = tl.zeros((BC, offs_i.shape[0]), dtype=ACC)  # (W2[:, :, t] @ W1) for this block of c
        for a0 in range(0, A, BA):
            offs_a = a0 + tl.arange(0, BA)
            b2 = tl.load(w2 + g * C * A * T + offs_c[:, None] * (A * T) + offs_a[None, :] * T + t,
                         mask=(offs_c[:, None] < C) & (offs_a[None, :] < A), other=0.0)
            b1 = tl.load(w1 + g * A * I + offs_a[:, None] * I + offs_i[None, :],
                         mask=(offs_a[:, None] < A) & (offs_i[None, :] < I), other=0.0)
            inner += tl.dot(b2.to(ACC), b1.to(ACC), input_precision="ieee")
        b3 = tl.load(w3 + g * O * C + offs_o[:, None] * C + offs_c[None, :],
                     mask=(offs_o[:, None] < O) & (offs_c[None, :] < C), other=0.0)
        acc += tl.dot(b3.to(ACC), inner, input_precision="ieee")
    tl.store(dst + g * O * I * T + offs_o[:, None] * (I * T) + offs_i[None, :] * T + t,
             acc.to(dst.dtype.element_ty), mask=(offs_o[:, None] < O) & (offs_i[None, :] < I))


@triton.jit
def cl_compose_fwd_kernel(w1, w2, w3, out, A, I, C, O, T,
                          BO: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr, BA: tl.constexpr, ACC: tl.constexpr,
                          WIDE: tl.constexpr):
    pid_gt, pid_o, pid_i = program_ids(WIDE)
    A, I, C, O, T = widen(A, WIDE), widen(I, WIDE), widen(C, WIDE), widen(O, WIDE), widen(T, WIDE)
    fwd_tile(w1, w2, w3, out, pid_gt // T, pid_gt % T, pid_o * BO + tl.arange(0, BO), pid_i * BI + tl.arange(0, BI),
             A, I, C, O, T, BC, BA, ACC)


@triton.jit
def bwd_w1_tile(grad, w2, w3, dst, g, offs_a, offs_i, A, I, C, O, T, BC: tl.constexpr, BO: tl.constexpr,
                ACC: tl.constexpr):
    """The (a, i) tile of ``dW1[g] = sum_t W2[g, :, :, t]^T @ (W3[g]^T @ dW[g, :, :, t])``, stored at ``dst``."""
    acc = tl.zeros((offs_a.shape[0], offs_i.shape[0]), dtype=ACC)
    for t in range(0, T):
        for c0 in range(0, C, BC):
            offs_c = c0 + tl.arange(0, BC)
            inner = tl.zeros((BC, offs_i.shape[0]), dtype=ACC)  # (W3^T @ dW_t) for this block of c
            for o0 in range(0, O, BO):
                offs_o = o0 + tl.arange(0, BO)
                b3t = tl.load(w3 + g * O * C + offs_c[:, None] + offs_o[None, :] * C,
                              mask=(offs_c[:, None] < C) & (offs_o[None, :] < O), other=0.0)
                bg = tl.load(grad + g * O * I * T + offs_o[:, None] * (I * T) + offs_i[None, :] * T + t,
                             mask=(offs_o[:, None] < O) & (offs_i[None, :] < I), other=0.0)
                inner += tl.dot(b3t.to(ACC), bg.to(ACC), input_precision="ieee")
            b2t = tl.load(w2 + g * C * A * T + offs_a[:, None] * T + offs_c[None, :] * (A * T) + t,
                          mask=(offs_a[:, None] < A) & (offs_c[None, :] < C), other=0.0)
            acc += tl.dot(b2t.to(ACC), inner, input_precision="ieee")
    tl.store(dst + g * A * I + offs_a[:, None] * I + offs_i[None, :], acc.to(dst.dtype.element_ty),
             mask=(offs_a[:, None] < A) & (offs_i[None, :] < I))


@triton.jit
def cl_compose_bwd_w1_kernel(grad, w2, w3, dw1, A, I, C, O, T,
                             BA: tl.constexpr, BI: tl.constexpr, BC: tl.constexpr, BO: tl.constexpr, ACC: tl.constexpr,
                             WIDE: tl.constexpr):
    """``dW1[g] = sum_t W2[g, :, :, t]^T @ (W3[g]^T @ dW[g, :, :, t])``; taps reduced in-program."""
    g, pid_a, pid_i = program_ids(WIDE)
    A, I, C, O, T = widen(A, WIDE), widen(I, WIDE), widen(C, WIDE), widen(O, WIDE), widen(T, WIDE)
    bwd_w1_tile(grad, w2, w3, dw1, g, pid_a * BA + tl.arange(0, BA), pid_i * BI + tl.arange(0, BI),
                A, I, C, O, T, BC, BO, ACC)


@triton.jit
def _grad_times_w1t(grad, w1, g, t, offs_o, offs_a, A, I, O, T, BI: tl.constexpr, ACC: tl.constexpr):
    """Tile ``(dW[g, :, :, t] @ W1[g]^T)[offs_o, offs_a]``: the inner product both the dW2 and the
    dW3 kernels chain, kept in registers."""
    inner = tl.zeros((offs_o.shape[0], offs_a.shape[0]), dtype=ACC)
    for i0 in range(0, I, BI):
        offs_i = i0 + tl.arange(0, BI)
        tile_g = tl.load(grad + g * O * I * T + offs_o[:, None] * (I * T) + offs_i[None, :] * T + t,
                         mask=(offs_o[:, None] < O) & (offs_i[None, :] < I), other=0.0)
        tile_w1t = tl.load(w1 + g * A * I + offs_i[:, None] + offs_a[None, :] * I,
                           mask=(offs_i[:, None] < I) & (offs_a[None, :] < A), other=0.0)
        inner += tl.dot(tile_g.to(ACC), tile_w1t.to(ACC), input_precision="ieee")
    return inner


@triton.jit
def cl_compose_bwd_w2_kernel(grad, w1, w3, dw2, A, I, C, O, T,
                             BC: tl.constexpr, BA: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr, ACC: tl.constexpr,
                             WIDE: tl.constexpr):
    """``dW2[g, :, :, t] = W3[g]^T @ (dW[g, :, :, t] @ W1[g]^T)``."""
    pid_gt, pid_c, pid_a = program_ids(WIDE)
    A, I, C, O, T = widen(A, WIDE), widen(I, WIDE), widen(C, WIDE), widen(O, WIDE), widen(T, WIDE)
    g, t = pid_gt // T, pid_gt % T
    offs_c = pid_c * BC + tl.arange(0, BC)
    offs_a = pid_a * BA + tl.arange(0, BA)
    acc = tl.zeros((BC, BA), dtype=ACC)
    for o0 in range(0, O, BO):
        offs_o = o0 + tl.arange(0, BO)
        inner = _grad_times_w1t(grad, w1, g, t, offs_o, offs_a, A, I, O, T, BI, ACC)
        b3t = tl.load(w3 + g * O * C + offs_c[:, None] + offs_o[None, :] * C,
                      mask=(offs_c[:, None] < C) & (offs_o[None, :] < O), other=0.0)
        acc += tl.dot(b3t.to(acc.dtype), inner, input_precision="ieee")
    tl.store(dw2 + g * C * A * T + offs_c[:, None] * (A * T) + offs_a[None, :] * T + t,
             acc.to(dw2.dtype.element_ty), mask=(offs_c[:, None] < C) & (offs_a[None, :] < A))


@triton.jit
def cl_compose_bwd_w3_kernel(grad, w1, w2, dw3, A, I, C, O, T,
                             BO: tl.constexpr, BC: tl.constexpr, BA: tl.constexpr, BI: tl.constexpr, ACC: tl.constexpr,
                             WIDE: tl.constexpr):
    """``dW3[g] = sum_t (dW[g, :, :, t] @ W1[g]^T) @ W2[g, :, :, t]^T``; taps reduced in-program."""
    g, pid_o, pid_c = program_ids(WIDE)
    A, I, C, O, T = widen(A, WIDE), widen(I, WIDE), widen(C, WIDE), widen(O, WIDE), widen(T, WIDE)
    offs_o = pid_o * BO + tl.arange(0, BO)
    offs_c = pid_c * BC + tl.arange(0, BC)
    acc = tl.zeros((BO, BC), dtype=ACC)
    for t in range(0, T):
        for a0 in range(0, A, BA):
            offs_a = a0 + tl.arange(0, BA)
            inner = _grad_times_w1t(grad, w1, g, t, offs_o, offs_a, A, I, O, T, BI, ACC)
            b2t = tl.load(w2 + g * C * A * T + offs_a[:, None] * T + offs_c[None, :] * (A * T) + t,
                          mask=(offs_a[:, None] < A) & (offs_c[None, :] < C), other=0.0)
            acc += tl.dot(inner, b2t.to(acc.dtype), input_precision="ieee")
    tl.store(dw3 + g * O * C + offs_o[:, None] * C + offs_c[None, :], acc.to(dw3.dtype.element_ty),
             mask=(offs_o[:, None] < O) & (offs_c[None, :] < C))


@triton.jit
def bias_fold_tile(w2, w3, b1, b2, b3, dst, g, offs_o, A, C, O, T, BC: tl.constexpr, BK: tl.constexpr,
                   ACC: tl.constexpr):
    """The o tile of ``b[g] = W3[g] @ (sum_t W2[g, :, :, t] @ b1[g] + b2[g]) + b3[g]``, stored at ``dst``.
    W2's (a, t) axes are walked as one flat, contiguous axis of length A*T, so the tiles stay
    two-dimensional."""
    AT = A * T
    acc = tl.load(b3 + g * O + offs_o, mask=offs_o < O, other=0.0).to(ACC)
    for c0 in range(0, C, BC):
        offs_c = c0 + tl.arange(0, BC)
        inner = tl.load(b2 + g * C + offs_c, mask=offs_c < C, other=0.0).to(ACC)
        for k0 in range(0, AT, BK):
            offs_k = k0 + tl.arange(0, BK)  # flat (a, t)
            vb1 = tl.load(b1 + g * A + offs_k // T, mask=offs_k < AT, other=0.0).to(ACC)
            tile = tl.load(w2 + g * C * AT + offs_c[:, None] * AT + offs_k[None, :],
                           mask=(offs_c[:, None] < C) & (offs_k[None, :] < AT), other=0.0).to(ACC)
            inner += tl.sum(tile * vb1[None, :], axis=1)
        tile3 = tl.load(w3 + g * O * C + offs_o[:, None] * C + offs_c[None, :],
                        mask=(offs_o[:, None] < O) & (offs_c[None, :] < C), other=0.0).to(ACC)
        acc += tl.sum(tile3 * inner[None, :], axis=1)
    tl.store(dst + g * O + offs_o, acc.to(dst.dtype.element_ty), mask=offs_o < O)


@triton.jit
def cl_bias_fold_kernel(w2, w3, b1, b2, b3, out, A, C, O, T,
                        BO: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    """``b[g] = W3[g] @ (sum_t W2[g, :, :, t] @ b1[g] + b2[g]) + b3[g]`` (a constant field through
    the "valid" kxk sums its taps)."""
    g, pid_o, _ = program_ids(WIDE)
    A, C, O, T = widen(A, WIDE), widen(C, WIDE), widen(O, WIDE), widen(T, WIDE)
    bias_fold_tile(w2, w3, b1, b2, b3, out, g, pid_o * BO + tl.arange(0, BO), A, C, O, T, BC, BK, ACC)
