"""Triton convolution kernels for the compact-size convolution of a fused unit.

Implicit GEMM (nothing is unfolded into memory), per group:
- forward: ``[N*P*Q pixels] x [C/g*KH*KW] @ [C/g*KH*KW] x [O/g]``, bias added in the epilogue;
- input gradient: ``[N*H*W] x [O/g*KH*KW] @ ... x [C/g]``, gathering ``dy`` only where
  ``(h + pad - kh*dil)`` is a multiple of the stride, so no dilated gradient is ever built;
- weight gradient: ``[O/g] x [N*P*Q] @ [N*P*Q] x [C/g*KH*KW]``, the pixel reduction split into
  chunks that write partial sums (summed afterwards: deterministic, no atomics), with the bias
  gradient reduced from the same ``dy`` tiles;
- depthwise (one input and one output channel per group): elementwise kernels over taps, which
  beat a GEMM that would be 1 wide.
Tensors are read and written through their strides, so NCHW and channels_last need no copies.
``WIDE`` switches the index arithmetic to int64 (offsets.py).
"""
import triton
import triton.language as tl

from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.offsets import program_ids, widen

# The autotuners' key: the problem shape (dtypes are added by Triton).
GEMM_KEY = ["N", "H", "W", "P", "Q", "KH", "KW", "SH", "SW", "CG", "OG"]


@triton.autotune(configs=lc.tuned(lc.GEMM_CONFIGS), key=GEMM_KEY,
                 prune_configs_by={"early_config_prune": lc.prune_for("x", lc.GEMM_CONFIGS)})
@triton.jit
def conv2d_fwd_kernel(x, w, b, y, N, H, W, P, Q, KH, KW, SH, SW, PH, PW, DH, DW, CG, OG,
                      sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                      HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                      ACC: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr):
    pid_m, pid_n, g = program_ids(WIDE)
    N, H, W, P, Q = widen(N, WIDE), widen(H, WIDE), widen(W, WIDE), widen(P, WIDE), widen(Q, WIDE)
    KH, KW, CG, OG = widen(KH, WIDE), widen(KW, WIDE), widen(CG, WIDE), widen(OG, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    syn, syc, syh, syw = widen(syn, WIDE), widen(syc, WIDE), widen(syh, WIDE), widen(syw, WIDE)
    offs_m = pid_m * BM + tl.arange(0, BM)
    n, pq = offs_m // (P * Q), offs_m % (P * Q)
    p, q = pq // Q, pq % Q
    offs_n = pid_n * BN + tl.arange(0, BN)
    K = CG * KH * KW
    acc = tl.zeros((BM, BN), dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        c, tap = offs_k // (KH * KW), offs_k % (KH * KW)
        h = p[:, None] * SH - PH + (tap // KW)[None, :] * DH
        wc = q[:, None] * SW - PW + (tap % KW)[None, :] * DW
        in_x = (offs_m[:, None] < N * P * Q) & (offs_k[None, :] < K) & (h >= 0) & (h < H) & (wc >= 0) & (wc < W)
        tile_x = tl.load(x + n[:, None] * sxn + (g * CG + c[None, :]) * sxc + h * sxh + wc * sxw, mask=in_x, other=0.0)
        tile_w = tl.load(w + (g * OG + offs_n[None, :]) * K + offs_k[:, None],
                         mask=(offs_k[:, None] < K) & (offs_n[None, :] < OG), other=0.0)
        acc += tl.dot(tile_x, tile_w, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b + g * OG + offs_n, mask=offs_n < OG, other=0.0).to(ACC)[None, :]
    tl.store(y + n[:, None] * syn + (g * OG + offs_n[None, :]) * syc + p[:, None] * syh + q[:, None] * syw,
             acc.to(y.dtype.element_ty), mask=(offs_m[:, None] < N * P * Q) & (offs_n[None, :] < OG))


@triton.autotune(configs=lc.tuned(lc.GEMM_CONFIGS), key=GEMM_KEY,
                 prune_configs_by={"early_config_prune": lc.prune_for("dy", lc.GEMM_CONFIGS)})
@triton.jit
def conv2d_dgrad_kernel(dy, w, dx, N, H, W, P, Q, KH, KW, SH, SW, PH, PW, DH, DW, CG, OG,
                        sdn, sdc, sdh, sdw, sxn, sxc, sxh, sxw,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr):
    pid_m, pid_n, g = program_ids(WIDE)
    N, H, W, P, Q = widen(N, WIDE), widen(H, WIDE), widen(W, WIDE), widen(P, WIDE), widen(Q, WIDE)
    KH, KW, CG, OG = widen(KH, WIDE), widen(KW, WIDE), widen(CG, WIDE), widen(OG, WIDE)
    sdn, sdc, sdh, sdw = widen(sdn, WIDE), widen(sdc, WIDE), widen(sdh, WIDE), widen(sdw, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    offs_m = pid_m * BM + tl.arange(0, BM)
    n, hw = offs_m // (H * W), offs_m % (H * W)
    h, wc = hw // W, hw % W
    offs_n = pid_n * BN + tl.arange(0, BN)  # input channel within the group
    K = OG * KH * KW
    acc = tl.zeros((BM, BN), dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        o, tap = offs_k // (KH * KW), offs_k % (KH * KW)
        kh, kw = tap // KW, tap % KW
        hp = h[:, None] + PH - kh[None, :] * DH  # = p * SH where an output pixel used this input
        wp = wc[:, None] + PW - kw[None, :] * DW
        hit = (hp >= 0) & (wp >= 0) & (hp % SH == 0) & (wp % SW == 0) & (hp // SH < P) & (wp // SW < Q)
        hit = hit & (offs_m[:, None] < N * H * W) & (offs_k[None, :] < K)
        tile_dy = tl.load(dy + n[:, None] * sdn + (g * OG + o[None, :]) * sdc + (hp // SH) * sdh + (wp // SW) * sdw,
                          mask=hit, other=0.0)
        tile_w = tl.load(w + (g * OG + o[:, None]) * (CG * KH * KW) + offs_n[None, :] * (KH * KW) + tap[:, None],
                         mask=(offs_k[:, None] < K) & (offs_n[None, :] < CG), other=0.0)
        acc += tl.dot(tile_dy, tile_w, input_precision=PRECISION, out_dtype=ACC)
    tl.store(dx + n[:, None] * sxn + (g * CG + offs_n[None, :]) * sxc + h[:, None] * sxh + wc[:, None] * sxw,
             acc.to(dx.dtype.element_ty), mask=(offs_m[:, None] < N * H * W) & (offs_n[None, :] < CG))


@triton.autotune(configs=lc.tuned(lc.WGRAD_CONFIGS), key=GEMM_KEY,
                 prune_configs_by={"early_config_prune": lc.prune_for("x", lc.WGRAD_CONFIGS)})
@triton.jit
def conv2d_wgrad_kernel(x, dy, dw_part, db_part, N, H, W, P, Q, KH, KW, SH, SW, PH, PW, DH, DW, CG, OG, O,
                        CHUNK, SPLITS, sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw,
                        HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr):
    pid_m, pid_n, pid_gs = program_ids(WIDE)
    N, H, W, P, Q = widen(N, WIDE), widen(H, WIDE), widen(W, WIDE), widen(P, WIDE), widen(Q, WIDE)
    KH, KW, CG, OG = widen(KH, WIDE), widen(KW, WIDE), widen(CG, WIDE), widen(OG, WIDE)
    O, CHUNK, SPLITS = widen(O, WIDE), widen(CHUNK, WIDE), widen(SPLITS, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    sdn, sdc, sdh, sdw = widen(sdn, WIDE), widen(sdc, WIDE), widen(sdh, WIDE), widen(sdw, WIDE)
    g, split = pid_gs // SPLITS, pid_gs % SPLITS
    offs_m = pid_m * BM + tl.arange(0, BM)  # output channel within the group
    offs_n = pid_n * BN + tl.arange(0, BN)  # (input channel, tap) within the group
    c, tap = offs_n // (KH * KW), offs_n % (KH * KW)
    K = CG * KH * KW
    NPQ = N * P * Q
    start = split * CHUNK
    acc = tl.zeros((BM, BN), dtype=ACC)
    bias_acc = tl.zeros((BM,), dtype=ACC)
    for k0 in range(start, tl.minimum(start + CHUNK, NPQ), BK):
        offs_k = k0 + tl.arange(0, BK)
        in_k = (offs_k < start + CHUNK) & (offs_k < NPQ)
        n, pq = offs_k // (P * Q), offs_k % (P * Q)
        p, q = pq // Q, pq % Q
        dy_offsets = n[None, :] * sdn + (g * OG + offs_m[:, None]) * sdc + p[None, :] * sdh + q[None, :] * sdw
        tile_dy = tl.load(dy + dy_offsets,
                          mask=(offs_m[:, None] < OG) & in_k[None, :], other=0.0)
        h = p[:, None] * SH - PH + (tap // KW)[None, :] * DH
        wc = q[:, None] * SW - PW + (tap % KW)[None, :] * DW
        in_x = in_k[:, None] & (offs_n[None, :] < K) & (h >= 0) & (h < H) & (wc >= 0) & (wc < W)
        tile_x = tl.load(x + n[:, None] * sxn + (g * CG + c[None, :]) * sxc + h * sxh + wc * sxw, mask=in_x, other=0.0)
        acc += tl.dot(tile_dy, tile_x, input_precision=PRECISION, out_dtype=ACC)
        if HAS_BIAS:
            bias_acc += tl.sum(tile_dy.to(ACC), axis=1)
    rows = g * OG + offs_m
    tl.store(dw_part + split * O * K + rows[:, None] * K + offs_n[None, :], acc,
             mask=(offs_m[:, None] < OG) & (offs_n[None, :] < K))
    if HAS_BIAS:
        if pid_n == 0:  # one column of programs writes the bias partials
            tl.store(db_part + split * O + rows, bias_acc, mask=offs_m < OG)


@triton.jit
def depthwise_fwd_kernel(x, w, b, y, N, C, H, W, P, Q, KH, KW, SH, SW, PH, PW, DH, DW,
                         sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                         HAS_BIAS: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr,
                         WIDE: tl.constexpr):
    pid_m, pid_c, _ = program_ids(WIDE)
    N, C, H, W, P, Q = widen(N, WIDE), widen(C, WIDE), widen(H, WIDE), widen(W, WIDE), widen(P, WIDE), widen(Q, WIDE)
    KH, KW = widen(KH, WIDE), widen(KW, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    syn, syc, syh, syw = widen(syn, WIDE), widen(syc, WIDE), widen(syh, WIDE), widen(syw, WIDE)
    offs_m = pid_m * BM + tl.arange(0, BM)
    n, pq = offs_m // (P * Q), offs_m % (P * Q)
    p, q = pq // Q, pq % Q
    offs_c = pid_c * BC + tl.arange(0, BC)
    valid = (offs_m[:, None] < N * P * Q) & (offs_c[None, :] < C)
    acc = tl.zeros((BM, BC), dtype=ACC)
    for kh in range(0, KH):
        for kw in range(0, KW):
            h, wc = p * SH - PH + kh * DH, q * SW - PW + kw * DW
            inside = (h >= 0) & (h < H) & (wc >= 0) & (wc < W)
            tile_x = tl.load(x + n[:, None] * sxn + offs_c[None, :] * sxc + (h * sxh + wc * sxw)[:, None],
                             mask=valid & inside[:, None], other=0.0)
            tap_w = tl.load(w + offs_c * (KH * KW) + kh * KW + kw, mask=offs_c < C, other=0.0)
            acc += tile_x.to(ACC) * tap_w.to(ACC)[None, :]
    if HAS_BIAS:
        acc += tl.load(b + offs_c, mask=offs_c < C, other=0.0).to(ACC)[None, :]
    tl.store(y + n[:, None] * syn + offs_c[None, :] * syc + (p * syh + q * syw)[:, None], acc.to(y.dtype.element_ty),
             mask=valid)


@triton.jit
def depthwise_dgrad_kernel(dy, w, dx, N, C, H, W, P, Q, KH, KW, SH, SW, PH, PW, DH, DW,
                           sdn, sdc, sdh, sdw, sxn, sxc, sxh, sxw,
                           BM: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr, WIDE: tl.constexpr):
    pid_m, pid_c, _ = program_ids(WIDE)
    N, C, H, W, P, Q = widen(N, WIDE), widen(C, WIDE), widen(H, WIDE), widen(W, WIDE), widen(P, WIDE), widen(Q, WIDE)
    KH, KW = widen(KH, WIDE), widen(KW, WIDE)
    sdn, sdc, sdh, sdw = widen(sdn, WIDE), widen(sdc, WIDE), widen(sdh, WIDE), widen(sdw, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    offs_m = pid_m * BM + tl.arange(0, BM)
    n, hw = offs_m // (H * W), offs_m % (H * W)
    h, wc = hw // W, hw % W
    offs_c = pid_c * BC + tl.arange(0, BC)
    valid = (offs_m[:, None] < N * H * W) & (offs_c[None, :] < C)
    acc = tl.zeros((BM, BC), dtype=ACC)
    for kh in range(0, KH):
        for kw in range(0, KW):
            hp, wp = h + PH - kh * DH, wc + PW - kw * DW
            hit = (hp >= 0) & (wp >= 0) & (hp % SH == 0) & (wp % SW == 0) & (hp // SH < P) & (wp // SW < Q)
            pixel = (hp // SH) * sdh + (wp // SW) * sdw
            tile_dy = tl.load(dy + n[:, None] * sdn + offs_c[None, :] * sdc + pixel[:, None],
                              mask=valid & hit[:, None], other=0.0)
            tap_w = tl.load(w + offs_c * (KH * KW) + kh * KW + kw, mask=offs_c < C, other=0.0)
            acc += tile_dy.to(ACC) * tap_w.to(ACC)[None, :]
    tl.store(dx + n[:, None] * sxn + offs_c[None, :] * sxc + (h * sxh + wc * sxw)[:, None], acc.to(dx.dtype.element_ty),
             mask=valid)


@triton.jit
def depthwise_wgrad_kernel(x, dy, dw_part, db_part, N, C, H, W, P, Q, KH, KW, SH, SW, PH, PW, DH, DW, CHUNK,
                           sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw,
                           HAS_BIAS: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr,
                           WIDE: tl.constexpr):
    """Partial sums over one chunk of output pixels, for every tap of a block of channels."""
    pid_c, split, _ = program_ids(WIDE)
    N, C, H, W, P, Q = widen(N, WIDE), widen(C, WIDE), widen(H, WIDE), widen(W, WIDE), widen(P, WIDE), widen(Q, WIDE)
    KH, KW, CHUNK = widen(KH, WIDE), widen(KW, WIDE), widen(CHUNK, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    sdn, sdc, sdh, sdw = widen(sdn, WIDE), widen(sdc, WIDE), widen(sdh, WIDE), widen(sdw, WIDE)
    offs_c = pid_c * BC + tl.arange(0, BC)
    NPQ = N * P * Q
    start = split * CHUNK
    for kh in range(0, KH):
        for kw in range(0, KW):
            acc = tl.zeros((BC,), dtype=ACC)
            for m0 in range(start, tl.minimum(start + CHUNK, NPQ), BM):
                offs_m = m0 + tl.arange(0, BM)
                in_m = (offs_m < start + CHUNK) & (offs_m < NPQ)
                n, pq = offs_m // (P * Q), offs_m % (P * Q)
                p, q = pq // Q, pq % Q
                h, wc = p * SH - PH + kh * DH, q * SW - PW + kw * DW
                inside = in_m & (h >= 0) & (h < H) & (wc >= 0) & (wc < W)
                tile_dy = tl.load(dy + n[:, None] * sdn + offs_c[None, :] * sdc + (p * sdh + q * sdw)[:, None],
                                  mask=in_m[:, None] & (offs_c[None, :] < C), other=0.0)
                tile_x = tl.load(x + n[:, None] * sxn + offs_c[None, :] * sxc + (h * sxh + wc * sxw)[:, None],
                                 mask=inside[:, None] & (offs_c[None, :] < C), other=0.0)
                acc += tl.sum(tile_dy.to(ACC) * tile_x.to(ACC), axis=0)
            tl.store(dw_part + split * C * KH * KW + offs_c * (KH * KW) + kh * KW + kw, acc, mask=offs_c < C)
    if HAS_BIAS:
        bias_acc = tl.zeros((BC,), dtype=ACC)
        for m0 in range(start, tl.minimum(start + CHUNK, NPQ), BM):
            offs_m = m0 + tl.arange(0, BM)
            in_m = (offs_m < start + CHUNK) & (offs_m < NPQ)
            n, pq = offs_m // (P * Q), offs_m % (P * Q)
            pixel = (pq // Q) * sdh + (pq % Q) * sdw
            tile_dy = tl.load(dy + n[:, None] * sdn + offs_c[None, :] * sdc + pixel[:, None],
                              mask=in_m[:, None] & (offs_c[None, :] < C), other=0.0)
            bias_acc += tl.sum(tile_dy.to(ACC), axis=0)
        tl.store(db_part + split * C + offs_c, bias_acc, mask=offs_c < C)
