"""``torch.library`` ops around the Triton chain kernels, with fake implementations and autograd:
``expandnets::triton_chain`` (forward) and ``expandnets::triton_chain_backward``.

Arguments (nn.Conv2d weight layouts, one group count for every layer):
``x (N, G*MG, H, W)``, ``w1 (G*A, MG, KH1, KW1)``, ``w2 (G*C, A, KH, KW)``, optional ``w3 (G*O, C, 1, 1)``;
biases all present or all ``None``; ``pads = [left, right, top, bottom]`` zero padding of the unit's
input; ``dilation1`` layer 1's dilation; ``stride``/``dilation`` layer 2's. Output
``(N, G*O or G*C, P, Q)`` in ``x``'s memory format.

Saved for backward: the input and the weights only; every intermediate is recomputed on chip, so
this memory does not grow with the rate. The backward's transient workspace (dz2 with layer 3,
dz1 for a KxK layer 1, the per-split partial sums) is freed when it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import triton

from expandnets_cuda.kernels.chain_geometry import ChainGeometry, check_chain_args, geometry, like_layout  # noqa: F401
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.launch_configs import acc_type
from expandnets_cuda.kernels.triton.offsets import needs_wide_offsets
from expandnets_cuda.kernels.triton.chain_kernels import chain_bwd_in_kernel, chain_bwd_out_kernel, chain_dgrad1_kernel, chain_fwd_kernel

Tensor = torch.Tensor

# Partial weight-gradient buffers hold at most this many elements per weight (one slice per split).
PARTIAL_BUDGET = 1 << 25
MAX_SPLITS = 64


@dataclass(frozen=True)
class ChainConfig:
    """Launch configuration of every chain kernel for one problem: tile edges and warps/stages."""

    BP: int  # output (or layer-1) pixels per tile
    BK: int  # layer-1 reduction (input channel x layer-1 tap)
    BA: int  # layer-1 output channels
    BC: int  # layer-2 output channels
    BO: int  # layer-3 output channels
    num_warps: int = 4
    num_stages: int = 1

    @property
    def maxnreg(self) -> int:
        """Registers a thread may use, stated (not left to ptxas, which trades spills for occupancy)."""
        return lc.register_budget(self.num_warps)

    def launch_kwargs(self) -> dict:
        return dict(num_warps=self.num_warps, num_stages=self.num_stages, maxnreg=self.maxnreg)


def chain_config(K1: int, A: int, C: int, O: int, dtype: torch.dtype, backward: bool = False) -> ChainConfig:
    """The one rule that sizes the chain kernels' tiles (the compile gate enumerates it): 32 pixels
    by 16 channels on every edge. Each channel edge is the reduction of some dot of the chain
    (layer 1 over BK, layer 2 over BA, layer 3 over BC, dh2 over BO), and the exact (FMA) dots keep
    a thread's share of both operands along the whole reduction in registers: at 32 or 64 the
    sm_90 gate measured spills in every chain kernel, at 16 none. The backward's weight-gradient
    dots reduce over the pixels, so its pixel edge is 16 too, and in float64 (64-bit offsets and
    values) it spreads the tiles over 8 warps. ``K1, A, C, O`` stay in the signature so a retiling
    can depend on them."""
    del K1, A, C, O
    if backward:
        return ChainConfig(BP=16, BK=16, BA=16, BC=16, BO=16, num_warps=8 if dtype == torch.float64 else 4)
    return ChainConfig(BP=32, BK=16, BA=16, BC=16, BO=16)


def config_space(dtype: Optional[torch.dtype] = None, backward: bool = False) -> List[ChainConfig]:
    """Every configuration ``chain_config`` can return (for ``dtype``, default all), for a compile
    gate to build them all (``chain_gate.GATE_SPECS``)."""
    configs = set()
    for dtype in ((dtype,) if dtype is not None else (torch.float32, torch.float64)):
        for k in (1, 17, 33):
            for a in (1, 17, 33):
                for c in (1, 17, 33, 65):
                    for o in (1, 17, 33, 65):
                        configs.add(chain_config(k, a, c, o, dtype, backward))
    return sorted(configs, key=lambda c: (c.BK, c.BA, c.BC, c.BO))


def dgrad1_blocks(MG: int, K2: int) -> Tuple[int, int]:
    """(BM, BK) of ``chain_dgrad1_kernel``: input channels x (layer-1 channel, tap) reduction."""
    return lc.block(MG, 32), lc.block(K2, 32)


def partial_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def precision(dtype: torch.dtype, exact: bool) -> str:
    return "tf32" if dtype == torch.float32 and not exact else "ieee"


def _flat(t: Optional[Tensor], like: Tensor) -> Tensor:
    return t.contiguous() if t is not None else like  # `like` is never read when the flag says so


def _launch_args(geo: ChainGeometry, pads, dilation1, stride, dilation):
    return (pads[2], pads[0], geo.KH1, geo.KW1, dilation1[0], dilation1[1],
            geo.KH, geo.KW, stride[0], stride[1], dilation[0], dilation[1])


@torch.library.custom_op("expandnets::triton_chain", mutates_args=())
def chain(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], w3: Optional[Tensor],
          b3: Optional[Tensor], pads: List[int], dilation1: List[int], stride: List[int], dilation: List[int],
          groups: int, relu: bool, exact: bool) -> Tensor:
    geo = check_chain_args(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups)
    w1c, w2c = w1.contiguous(), w2.contiguous()
    w3c = _flat(w3, w2c)
    y = like_layout(x, (geo.N, geo.out_channels, geo.P, geo.Q))
    cfg = chain_config(geo.K1, geo.A, geo.C, geo.O, x.dtype)
    has_l3 = w3 is not None
    width, edge = (geo.O, cfg.BO) if has_l3 else (geo.C, cfg.BC)
    grid = (triton.cdiv(geo.N * geo.P * geo.Q, cfg.BP), triton.cdiv(width, edge), groups)
    chain_fwd_kernel[grid](
        x, w1c, _flat(b1, w1c), w2c, _flat(b2, w2c), w3c, _flat(b3, w3c), y,
        geo.N, geo.H, geo.W, geo.P, geo.Q, *_launch_args(geo, pads, dilation1, stride, dilation),
        geo.MG, geo.A, geo.C, max(geo.O, 1), geo.K1, *x.stride(), *y.stride(),
        HAS_BIAS=b1 is not None, HAS_L3=has_l3, RELU=relu, BP=cfg.BP, BK=cfg.BK, BA=cfg.BA, BC=cfg.BC, BO=cfg.BO,
        ACC=acc_type(x.dtype), PRECISION=precision(x.dtype, exact), WIDE=needs_wide_offsets(x, y, w2),
        **cfg.launch_kwargs())
    return y


@chain.register_fake
def _chain_fake(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
    geo = geometry(x, w1, w2, w3, pads, dilation1, stride, dilation, groups)
    return like_layout(x, (geo.N, geo.out_channels, geo.P, geo.Q))


def splits_for(tiles: int, weight_elems: int) -> Tuple[int, int]:
    """``(splits, tiles_per_split)``: the pixel reduction of the weight gradients in at most
    ``MAX_SPLITS`` fixed chunks, each with its own partial buffer, within ``PARTIAL_BUDGET``."""
    splits = max(1, min(tiles, MAX_SPLITS, PARTIAL_BUDGET // max(weight_elems, 1)))
    per = triton.cdiv(tiles, splits)
    return triton.cdiv(tiles, per), per


@torch.library.custom_op("expandnets::triton_chain_backward", mutates_args=())
def chain_backward(dy: Tensor, x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                   w3: Optional[Tensor], b3: Optional[Tensor], pads: List[int], dilation1: List[int],
                   stride: List[int], dilation: List[int], groups: int, relu: bool,
                   exact: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dx, dw1, db1, dw2, db2, dw3, db3)``; gradients of absent tensors are empty."""
    geo = check_chain_args(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups)
    w1c, w2c = w1.contiguous(), w2.contiguous()
    w3c = _flat(w3, w2c)
    has_bias, has_l3 = b1 is not None, w3 is not None
    cfg = chain_config(geo.K1, geo.A, geo.C, geo.O, x.dtype, backward=True)
    acc, prec, pdt = acc_type(x.dtype), precision(x.dtype, exact), partial_dtype(x.dtype)
    common = cfg.launch_kwargs()
    G, dev = groups, x.device
    launch = _launch_args(geo, pads, dilation1, stride, dilation)
    empty = lambda: x.new_empty(0)  # noqa: E731  (a fresh one per output: outputs may not alias)
    zeros = lambda *shape: torch.zeros(shape, device=dev, dtype=pdt)  # noqa: E731

    if has_l3:
        tiles = triton.cdiv(geo.N * geo.P * geo.Q, cfg.BP)
        splits, per = splits_for(tiles, G * geo.O * geo.C)
        dz2 = torch.empty((geo.N, G * geo.C, geo.P, geo.Q), device=dev, dtype=pdt)
        dw3_part, db2_part = zeros(splits, G * geo.O, geo.C), zeros(splits, G * geo.C)
        chain_bwd_out_kernel[(splits, triton.cdiv(geo.C, cfg.BC), G)](
            x, w1c, _flat(b1, w1c), w2c, _flat(b2, w2c), w3c, dy, dz2, dw3_part, db2_part,
            geo.N, geo.H, geo.W, geo.P, geo.Q, *launch, geo.MG, geo.A, geo.C, geo.O, geo.K1, tiles, per,
            *x.stride(), *dy.stride(), HAS_BIAS=has_bias, RELU=relu, BP=cfg.BP, BK=cfg.BK, BA=cfg.BA,
            BC=cfg.BC, BO=cfg.BO, ACC=acc, PRECISION=prec, WIDE=needs_wide_offsets(x, dy, dz2, dw3_part, w2),
            **common)
        dw3 = dw3_part.sum(0).to(w3.dtype).reshape(w3.shape)
        db2 = db2_part.sum(0).to(b2.dtype) if has_bias else empty()
        db3 = dy.sum((0, 2, 3), dtype=pdt).to(b3.dtype) if has_bias else empty()
        grad_z2 = dz2
    else:
        dw3, db3 = empty(), empty()
        db2 = dy.sum((0, 2, 3), dtype=pdt).to(b2.dtype) if has_bias else empty()
        grad_z2 = dy

    pointwise1 = geo.KH1 * geo.KW1 == 1
    tiles = triton.cdiv(geo.N * geo.H1 * geo.W1, cfg.BP)
    splits, per = splits_for(tiles, G * geo.C * geo.A * geo.KH * geo.KW + G * geo.A * geo.K1)
    dw1_part, db1_part = zeros(splits, G * geo.A, geo.K1), zeros(splits, G * geo.A)
    dw2_part = zeros(splits, G * geo.C, geo.A, geo.KH * geo.KW)
    dx_acc = zeros(geo.N, G * geo.MG, geo.H, geo.W) if pointwise1 else dw1_part
    dz1 = dw1_part if pointwise1 else torch.empty((geo.N, G * geo.A, geo.H1, geo.W1), device=dev, dtype=pdt)
    chain_bwd_in_kernel[(splits, G)](
        x, w1c, _flat(b1, w1c), w2c, grad_z2, dx_acc, dz1, dw1_part, db1_part, dw2_part,
        geo.N, geo.H, geo.W, geo.H1, geo.W1, geo.P, geo.Q, *launch, geo.MG, geo.A, geo.C, geo.K1, tiles, per,
        *x.stride(), *grad_z2.stride(), HAS_BIAS=has_bias, RELU=relu, POINTWISE1=pointwise1,
        BP=cfg.BP, BK=cfg.BK, BA=cfg.BA, BC=cfg.BC, ACC=acc, PRECISION=prec,
        WIDE=needs_wide_offsets(x, grad_z2, dx_acc, dz1, dw1_part, dw2_part, w2), **common)
    dw1 = dw1_part.sum(0).to(w1.dtype).reshape(w1.shape)
    db1 = db1_part.sum(0).to(b1.dtype) if has_bias else empty()
    dw2 = dw2_part.sum(0).to(w2.dtype).reshape(w2.shape)
    dx = like_layout(x, x.shape)
    if pointwise1:
        dx.copy_(dx_acc)
    else:
        BM, BK = dgrad1_blocks(geo.MG, geo.A * geo.KH1 * geo.KW1)
        chain_dgrad1_kernel[(triton.cdiv(geo.N * geo.H * geo.W, cfg.BP), triton.cdiv(geo.MG, BM))](
            dz1, w1c, dx, geo.N, geo.H, geo.W, geo.H1, geo.W1, pads[2], pads[0], geo.KH1, geo.KW1,
            dilation1[0], dilation1[1], geo.MG, geo.A, geo.A * geo.KH1 * geo.KW1, *dx.stride(),
            BP=cfg.BP, BM=BM, BK=BK, ACC=acc, PRECISION=prec, WIDE=needs_wide_offsets(dz1, dx, w1c), **common)
    return dx, dw1, db1, dw2, db2, dw3, db3


@chain_backward.register_fake
def _chain_backward_fake(dy, x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
    like = lambda t: torch.empty_like(t) if t is not None else x.new_empty(0)  # noqa: E731
    return like_layout(x, x.shape), like(w1), like(b1), like(w2), like(b2), like(w3), like(b3)


def _setup(ctx, inputs, output):
    x, w1, b1, w2, b2, w3, b3, *args = inputs
    ctx.save_for_backward(x, w1, b1, w2, b2, w3, b3)
    ctx.args = args


def _grad(ctx, dy):
    x, w1, b1, w2, b2, w3, b3 = ctx.saved_tensors
    dx, dw1, db1, dw2, db2, dw3, db3 = chain_backward(dy, x, w1, b1, w2, b2, w3, b3, *ctx.args)
    has_bias, has_l3 = b1 is not None, w3 is not None
    return (dx, dw1, db1 if has_bias else None, dw2, db2 if has_bias else None,
            dw3 if has_l3 else None, db3 if has_bias and has_l3 else None) + (None,) * len(ctx.args)


chain.register_autograd(_grad, setup_context=_setup)
