"""Triton chain kernels: a whole expanded unit ``layer1 -> act -> layer2 [-> act -> 1x1]`` per launch,
the r-times-wider intermediates never leaving the chip.

One kernel family serves both strategies. ``layer1`` is a KH1xKW1 convolution read as a 1x1 over an
implicit im2col of the input (CL: KH1=KW1=1; a CK pair: the first 3x3), ``layer2`` the strided,
dilated kxk, and the optional ``layer3`` CL's trailing 1x1. The unit's padding is applied once, at
its input, exactly as ``python_ref`` does: out-of-image input pixels load as zero, so a layer-1
position in the padding still yields ``act(b1)`` - the border semantics of the unfused chain.

Per tile of BP output pixels the forward loops over layer 2's taps and recomputes the layer-1 tile
each tap reads (Triton has no shifted views of a register tile; the extra work is the 1x1's,
about 1/r of the kxk's). Backward recomputes the same tiles instead of saving them:
- ``chain_bwd_out`` (only with layer 3): ``dz2 = act'(z2) * W3^T dy`` for a tile, plus dW3 and db2;
- ``chain_bwd_in`` over layer-1 positions: gathers dz2 through layer 2's taps (no dilated gradient
  is built), giving dh1, dz1, dW2, dW1, db1 and - for a pointwise layer 1 - dx;
- ``chain_dgrad1`` (CK pair only): dx from dz1 through layer 1's taps.
Weight gradients go to per-split partial buffers that only one program touches (read, add, store:
no atomics), summed afterwards in a fixed order, so results are deterministic.
``WIDE`` (set by the wrapper from the tensors' extents, ``offsets.needs_wide_offsets``) widens the
program ids and integer arguments to int64 on entry, so all index arithmetic is 64-bit; otherwise
it all stays 32-bit.
"""
import triton
import triton.language as tl

from expandnets_cuda.kernels.triton.offsets import program_ids, widen


@triton.jit
def _widen7(a, b, c, d, e, f, g, WIDE: tl.constexpr):
    return widen(a, WIDE), widen(b, WIDE), widen(c, WIDE), widen(d, WIDE), widen(e, WIDE), widen(f, WIDE), widen(g, WIDE)


@triton.jit
def _act(z, RELU: tl.constexpr):
    if RELU:
        z = tl.maximum(z, 0.0)
    return z


@triton.jit
def _act_grad(dh, z, RELU: tl.constexpr):
    if RELU:
        dh = tl.where(z > 0.0, dh, 0.0)
    return dh


@triton.jit
def _x_tile(x, n, i, j, rows, g, k0, H, W, PT, PL, KH1, KW1, D1H, D1W, MG, K1, sxn, sxc, sxh, sxw,
            BK: tl.constexpr):
    """(BP, BK) implicit-im2col tile of the unit's input at layer-1 positions (i, j) (padded frame)."""
    offs_k = k0 + tl.arange(0, BK)
    c, tap = offs_k // (KH1 * KW1), offs_k % (KH1 * KW1)
    h = i[:, None] + (tap // KW1)[None, :] * D1H - PT
    w = j[:, None] + (tap % KW1)[None, :] * D1W - PL
    inside = rows[:, None] & (offs_k < K1)[None, :] & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    ptr = x + n[:, None] * sxn + (g * MG + c)[None, :] * sxc + h * sxh + w * sxw
    return tl.load(ptr, mask=inside, other=0.0)


@triton.jit
def _layer1(x, w1, b1, n, i, j, rows, g, a0, H, W, PT, PL, KH1, KW1, D1H, D1W, MG, A, K1,
            sxn, sxc, sxh, sxw, HAS_BIAS: tl.constexpr, BP: tl.constexpr, BK: tl.constexpr,
            BA: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """z1 = W1 x + b1 for channels a0..a0+BA at (i, j): a (BP, BA) tile in the accumulator type."""
    offs_a = a0 + tl.arange(0, BA)
    acc = tl.zeros((BP, BA), dtype=ACC)
    for k0 in range(0, K1, BK):
        tile_x = _x_tile(x, n, i, j, rows, g, k0, H, W, PT, PL, KH1, KW1, D1H, D1W, MG, K1,
                         sxn, sxc, sxh, sxw, BK)
        offs_k = k0 + tl.arange(0, BK)
        tile_w = tl.load(w1 + (g * A + offs_a)[None, :] * K1 + offs_k[:, None],
                         mask=(offs_k < K1)[:, None] & (offs_a < A)[None, :], other=0.0)
        acc += tl.dot(tile_x, tile_w, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b1 + g * A + offs_a, mask=offs_a < A, other=0.0).to(ACC)[None, :]
    return acc


@triton.jit
def _layer2(x, w1, b1, w2, b2, n, p, q, rows, g, c0, H, W, PT, PL, KH1, KW1, D1H, D1W, KH, KW, SH, SW,
            DH, DW, MG, A, C, K1, sxn, sxc, sxh, sxw, HAS_BIAS: tl.constexpr, RELU: tl.constexpr,
            BP: tl.constexpr, BK: tl.constexpr, BA: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr,
            PRECISION: tl.constexpr):
    """z2 for channels c0..c0+BC at output pixels (p, q), layer 1 recomputed per tap on chip."""
    offs_c = c0 + tl.arange(0, BC)
    T = KH * KW
    acc = tl.zeros((BP, BC), dtype=ACC)
    for tap in range(0, T):
        i = p * SH + (tap // KW) * DH
        j = q * SW + (tap % KW) * DW
        for a0 in range(0, A, BA):
            z1 = _layer1(x, w1, b1, n, i, j, rows, g, a0, H, W, PT, PL, KH1, KW1, D1H, D1W, MG, A, K1,
                         sxn, sxc, sxh, sxw, HAS_BIAS, BP, BK, BA, ACC, PRECISION)
            h1 = _act(z1, RELU).to(x.dtype.element_ty)
            offs_a = a0 + tl.arange(0, BA)
            tile_w = tl.load(w2 + ((g * C + offs_c)[None, :] * A + offs_a[:, None]) * T + tap,
                             mask=(offs_a < A)[:, None] & (offs_c < C)[None, :], other=0.0)
            acc += tl.dot(h1, tile_w, input_precision=PRECISION, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(b2 + g * C + offs_c, mask=offs_c < C, other=0.0).to(ACC)[None, :]
    return acc


@triton.jit
def _pixels(tile, NPIX, P, Q, BP: tl.constexpr):
    offs = tile * BP + tl.arange(0, BP)  # int64 when WIDE: `tile` comes from widened ids/arguments
    pq = offs % (P * Q)
    return offs < NPIX, offs // (P * Q), pq // Q, pq % Q


@triton.jit
def chain_fwd_kernel(x, w1, b1, w2, b2, w3, b3, y, N, H, W, P, Q, PT, PL, KH1, KW1, D1H, D1W,
                     KH, KW, SH, SW, DH, DW, MG, A, C, O, K1, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                     HAS_BIAS: tl.constexpr, HAS_L3: tl.constexpr, RELU: tl.constexpr, BP: tl.constexpr,
                     BK: tl.constexpr, BA: tl.constexpr, BC: tl.constexpr, BO: tl.constexpr,
                     ACC: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr):
    """y = W3 act(z2) + b3 (or z2 without layer 3) for BP output pixels and one block of channels."""
    pid_p, pid_o, g = program_ids(WIDE)
    N, H, W, P, Q, PT, PL = _widen7(N, H, W, P, Q, PT, PL, WIDE)
    KH1, KW1, D1H, D1W, KH, KW, SH = _widen7(KH1, KW1, D1H, D1W, KH, KW, SH, WIDE)
    SW, DH, DW, MG, A, C, O = _widen7(SW, DH, DW, MG, A, C, O, WIDE)
    K1, sxn, sxc, sxh, sxw, syn, syc = _widen7(K1, sxn, sxc, sxh, sxw, syn, syc, WIDE)
    syh, syw = widen(syh, WIDE), widen(syw, WIDE)
    rows, n, p, q = _pixels(pid_p, N * P * Q, P, Q, BP)
    if HAS_L3:
        offs_o = pid_o * BO + tl.arange(0, BO)
        acc = tl.zeros((BP, BO), dtype=ACC)
        for c0 in range(0, C, BC):
            z2 = _layer2(x, w1, b1, w2, b2, n, p, q, rows, g, c0, H, W, PT, PL, KH1, KW1, D1H, D1W, KH, KW,
                         SH, SW, DH, DW, MG, A, C, K1, sxn, sxc, sxh, sxw, HAS_BIAS, RELU, BP, BK, BA, BC,
                         ACC, PRECISION)
            h2 = _act(z2, RELU).to(x.dtype.element_ty)
            offs_c = c0 + tl.arange(0, BC)
            tile_w = tl.load(w3 + (g * O + offs_o)[None, :] * C + offs_c[:, None],
                             mask=(offs_c < C)[:, None] & (offs_o < O)[None, :], other=0.0)
            acc += tl.dot(h2, tile_w, input_precision=PRECISION, out_dtype=ACC)
        if HAS_BIAS:
            acc += tl.load(b3 + g * O + offs_o, mask=offs_o < O, other=0.0).to(ACC)[None, :]
        channels, width = g * O + offs_o, O
    else:
        offs_o = pid_o * BC + tl.arange(0, BC)
        acc = _layer2(x, w1, b1, w2, b2, n, p, q, rows, g, pid_o * BC, H, W, PT, PL, KH1, KW1, D1H, D1W,
                      KH, KW, SH, SW, DH, DW, MG, A, C, K1, sxn, sxc, sxh, sxw, HAS_BIAS, RELU, BP, BK, BA,
                      BC, ACC, PRECISION)
        channels, width = g * C + offs_o, C
    ptr = y + n[:, None] * syn + channels[None, :] * syc + (p * syh + q * syw)[:, None]
    tl.store(ptr, acc.to(y.dtype.element_ty), mask=rows[:, None] & (offs_o < width)[None, :])


@triton.jit
def chain_bwd_out_kernel(x, w1, b1, w2, b2, w3, dy, dz2, dw3_part, db2_part, N, H, W, P, Q, PT, PL,
                         KH1, KW1, D1H, D1W, KH, KW, SH, SW, DH, DW, MG, A, C, O, K1, TILES, TILES_PER_SPLIT,
                         sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw,
                         HAS_BIAS: tl.constexpr, RELU: tl.constexpr, BP: tl.constexpr, BK: tl.constexpr,
                         BA: tl.constexpr, BC: tl.constexpr, BO: tl.constexpr, ACC: tl.constexpr,
                         PRECISION: tl.constexpr, WIDE: tl.constexpr):
    """Through layer 3: dz2 (written, NCHW, accumulator type), dW3 and db2 partials of this split."""
    split, pid_c, g = program_ids(WIDE)
    N, H, W, P, Q, PT, PL = _widen7(N, H, W, P, Q, PT, PL, WIDE)
    KH1, KW1, D1H, D1W, KH, KW, SH = _widen7(KH1, KW1, D1H, D1W, KH, KW, SH, WIDE)
    SW, DH, DW, MG, A, C, O = _widen7(SW, DH, DW, MG, A, C, O, WIDE)
    K1, TILES, TILES_PER_SPLIT, sxn, sxc, sxh, sxw = _widen7(K1, TILES, TILES_PER_SPLIT, sxn, sxc, sxh, sxw, WIDE)
    sdn, sdc, sdh, sdw = widen(sdn, WIDE), widen(sdc, WIDE), widen(sdh, WIDE), widen(sdw, WIDE)
    offs_c = pid_c * BC + tl.arange(0, BC)
    in_c = offs_c < C
    GC, GO = widen(tl.num_programs(2), WIDE) * C, widen(tl.num_programs(2), WIDE) * O
    start = split * TILES_PER_SPLIT
    for tile in range(start, tl.minimum(start + TILES_PER_SPLIT, TILES)):
        rows, n, p, q = _pixels(tile, N * P * Q, P, Q, BP)
        z2 = _layer2(x, w1, b1, w2, b2, n, p, q, rows, g, pid_c * BC, H, W, PT, PL, KH1, KW1, D1H, D1W, KH,
                     KW, SH, SW, DH, DW, MG, A, C, K1, sxn, sxc, sxh, sxw, HAS_BIAS, RELU, BP, BK, BA, BC,
                     ACC, PRECISION)
        h2 = _act(z2, RELU).to(x.dtype.element_ty)
        dh2 = tl.zeros((BP, BC), dtype=ACC)
        for o0 in range(0, O, BO):
            offs_o = o0 + tl.arange(0, BO)
            in_o = offs_o < O
            tile_dy = tl.load(dy + n[:, None] * sdn + (g * O + offs_o)[None, :] * sdc
                              + (p * sdh + q * sdw)[:, None], mask=rows[:, None] & in_o[None, :], other=0.0)
            tile_w = tl.load(w3 + (g * O + offs_o)[:, None] * C + offs_c[None, :],
                             mask=in_o[:, None] & in_c[None, :], other=0.0)
            dh2 += tl.dot(tile_dy, tile_w, input_precision=PRECISION, out_dtype=ACC)
            part = dw3_part + split * GO * C + (g * O + offs_o)[:, None] * C + offs_c[None, :]
            both = in_o[:, None] & in_c[None, :]
            tl.store(part, tl.load(part, mask=both, other=0.0)
                     + tl.dot(tl.trans(tile_dy), h2, input_precision=PRECISION, out_dtype=ACC), mask=both)
        d = _act_grad(dh2, z2, RELU)
        d = tl.where(rows[:, None], d, 0.0)
        tl.store(dz2 + (n[:, None] * GC + (g * C + offs_c)[None, :]) * (P * Q) + (p * Q + q)[:, None], d,
                 mask=rows[:, None] & in_c[None, :])
        if HAS_BIAS:
            part_b = db2_part + split * GC + g * C + offs_c
            tl.store(part_b, tl.load(part_b, mask=in_c, other=0.0) + tl.sum(d, axis=0), mask=in_c)
        tl.debug_barrier()  # the next tile's read-add-store of the partials sees this one's


@triton.jit
def chain_bwd_in_kernel(x, w1, b1, w2, dz2, dx_acc, dz1, dw1_part, db1_part, dw2_part,
                        N, H, W, H1, W1, P, Q, PT, PL, KH1, KW1, D1H, D1W, KH, KW, SH, SW, DH, DW,
                        MG, A, C, K1, TILES, TILES_PER_SPLIT, sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw,
                        HAS_BIAS: tl.constexpr, RELU: tl.constexpr, POINTWISE1: tl.constexpr,
                        BP: tl.constexpr, BK: tl.constexpr, BA: tl.constexpr, BC: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr):
    """Over layer-1 positions (i, j): dh1 gathered from dz2 through layer 2's taps, dz1, and the
    dW2/dW1/db1 partials of this split; dx (pointwise layer 1) or dz1 (otherwise)."""
    split, g, _ = program_ids(WIDE)
    G = widen(tl.num_programs(1), WIDE)
    N, H, W, H1, W1, P, Q = _widen7(N, H, W, H1, W1, P, Q, WIDE)
    PT, PL, KH1, KW1, D1H, D1W, KH = _widen7(PT, PL, KH1, KW1, D1H, D1W, KH, WIDE)
    KW, SH, SW, DH, DW, MG, A = _widen7(KW, SH, SW, DH, DW, MG, A, WIDE)
    C, K1, TILES, TILES_PER_SPLIT, sxn, sxc, sxh = _widen7(C, K1, TILES, TILES_PER_SPLIT, sxn, sxc, sxh, WIDE)
    sxw, sdn, sdc, sdh = widen(sxw, WIDE), widen(sdn, WIDE), widen(sdc, WIDE), widen(sdh, WIDE)
    sdw = widen(sdw, WIDE)
    T = KH * KW
    start = split * TILES_PER_SPLIT
    for tile in range(start, tl.minimum(start + TILES_PER_SPLIT, TILES)):
        rows, n, i, j = _pixels(tile, N * H1 * W1, H1, W1, BP)
        for a0 in range(0, A, BA):
            offs_a = a0 + tl.arange(0, BA)
            in_a = offs_a < A
            z1 = _layer1(x, w1, b1, n, i, j, rows, g, a0, H, W, PT, PL, KH1, KW1, D1H, D1W, MG, A, K1,
                         sxn, sxc, sxh, sxw, HAS_BIAS, BP, BK, BA, ACC, PRECISION)
            h1 = _act(z1, RELU).to(x.dtype.element_ty)
            dh1 = tl.zeros((BP, BA), dtype=ACC)
            for tap in range(0, T):
                hp = i - (tap // KW) * DH  # = p * SH where output pixel p read (i, j) through this tap
                wp = j - (tap % KW) * DW
                hit = rows & (hp >= 0) & (wp >= 0) & (hp % SH == 0) & (wp % SW == 0) & (hp // SH < P) & (wp // SW < Q)
                pixel = (hp // SH) * sdh + (wp // SW) * sdw
                for c0 in range(0, C, BC):
                    offs_c = c0 + tl.arange(0, BC)
                    in_c = offs_c < C
                    tile_d = tl.load(dz2 + n[:, None] * sdn + (g * C + offs_c)[None, :] * sdc
                                     + pixel[:, None], mask=hit[:, None] & in_c[None, :], other=0.0)
                    tile_d = tile_d.to(x.dtype.element_ty)
                    tile_w = tl.load(w2 + ((g * C + offs_c)[:, None] * A + offs_a[None, :]) * T + tap,
                                     mask=in_c[:, None] & in_a[None, :], other=0.0)
                    dh1 += tl.dot(tile_d, tile_w, input_precision=PRECISION, out_dtype=ACC)
                    part = (dw2_part + split * G * C * A * T
                            + ((g * C + offs_c)[:, None] * A + offs_a[None, :]) * T + tap)
                    both = in_c[:, None] & in_a[None, :]
                    tl.store(part, tl.load(part, mask=both, other=0.0)
                             + tl.dot(tl.trans(tile_d), h1, input_precision=PRECISION, out_dtype=ACC), mask=both)
            d1 = tl.where(rows[:, None], _act_grad(dh1, z1, RELU), 0.0)
            if HAS_BIAS:
                part_b = db1_part + split * G * A + g * A + offs_a
                tl.store(part_b, tl.load(part_b, mask=in_a, other=0.0) + tl.sum(d1, axis=0), mask=in_a)
            d1_in = d1.to(x.dtype.element_ty)
            for k0 in range(0, K1, BK):
                offs_k = k0 + tl.arange(0, BK)
                in_k = offs_k < K1
                tile_x = _x_tile(x, n, i, j, rows, g, k0, H, W, PT, PL, KH1, KW1, D1H, D1W, MG, K1,
                                 sxn, sxc, sxh, sxw, BK)
                part = dw1_part + split * G * A * K1 + (g * A + offs_a)[:, None] * K1 + offs_k[None, :]
                both = in_a[:, None] & in_k[None, :]
                tl.store(part, tl.load(part, mask=both, other=0.0)
                         + tl.dot(tl.trans(d1_in), tile_x, input_precision=PRECISION, out_dtype=ACC), mask=both)
                if POINTWISE1:  # dx = W1^T dz1 at this very pixel; only in-image pixels have one
                    tile_w = tl.load(w1 + (g * A + offs_a)[:, None] * K1 + offs_k[None, :], mask=both, other=0.0)
                    h, w = i - PT, j - PL
                    real = rows & (h >= 0) & (h < H) & (w >= 0) & (w < W)
                    ptr = dx_acc + ((n * G * MG)[:, None] + (g * MG + offs_k)[None, :]) * (H * W) + (h * W + w)[:, None]
                    keep = real[:, None] & in_k[None, :]
                    tl.store(ptr, tl.load(ptr, mask=keep, other=0.0)
                             + tl.dot(d1_in, tile_w, input_precision=PRECISION, out_dtype=ACC), mask=keep)
            if not POINTWISE1:
                ptr = dz1 + ((n * G * A)[:, None] + (g * A + offs_a)[None, :]) * (H1 * W1) + (i * W1 + j)[:, None]
                tl.store(ptr, d1, mask=rows[:, None] & in_a[None, :])
            else:  # the next channel chunk reads-adds-writes the same dx elements, maybe in other threads
                tl.debug_barrier()
        tl.debug_barrier()  # the next tile's read-add-store of the partials sees this one's


@triton.jit
def chain_dgrad1_kernel(dz1, w1, dx, N, H, W, H1, W1, PT, PL, KH1, KW1, D1H, D1W, MG, A, K2,
                        sxn, sxc, sxh, sxw, BP: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr, WIDE: tl.constexpr):
    """dx from dz1 through layer 1's (stride-1, dilated) taps, for a KH1xKW1 layer 1 (groups=1)."""
    pid_p, pid_m, _ = program_ids(WIDE)
    N, H, W, H1, W1, PT, PL = _widen7(N, H, W, H1, W1, PT, PL, WIDE)
    KH1, KW1, D1H, D1W, MG, A, K2 = _widen7(KH1, KW1, D1H, D1W, MG, A, K2, WIDE)
    sxn, sxc, sxh, sxw = widen(sxn, WIDE), widen(sxc, WIDE), widen(sxh, WIDE), widen(sxw, WIDE)
    rows, n, h, w = _pixels(pid_p, N * H * W, H, W, BP)
    offs_m = pid_m * BM + tl.arange(0, BM)
    T1 = KH1 * KW1
    acc = tl.zeros((BP, BM), dtype=ACC)
    for k0 in range(0, K2, BK):  # K2 = A * taps: (layer-1 channel, tap)
        offs_k = k0 + tl.arange(0, BK)
        a, tap = offs_k // T1, offs_k % T1
        i = (h + PT)[:, None] - (tap // KW1)[None, :] * D1H
        j = (w + PL)[:, None] - (tap % KW1)[None, :] * D1W
        hit = rows[:, None] & (offs_k < K2)[None, :] & (i >= 0) & (i < H1) & (j >= 0) & (j < W1)
        tile_d = tl.load(dz1 + (n[:, None] * A + a[None, :]) * (H1 * W1) + i * W1 + j, mask=hit, other=0.0)
        tile_w = tl.load(w1 + (a[:, None] * MG + offs_m[None, :]) * T1 + tap[:, None],
                         mask=(offs_k < K2)[:, None] & (offs_m < MG)[None, :], other=0.0)
        acc += tl.dot(tile_d.to(w1.dtype.element_ty), tile_w, input_precision=PRECISION, out_dtype=ACC)
    ptr = dx + n[:, None] * sxn + offs_m[None, :] * sxc + (h * sxh + w * sxw)[:, None]
    tl.store(ptr, acc.to(dx.dtype.element_ty), mask=rows[:, None] & (offs_m < MG)[None, :])
