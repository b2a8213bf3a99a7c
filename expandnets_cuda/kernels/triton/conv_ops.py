"""``torch.library`` ops around the Triton convolution kernels, with fake implementations and
autograd: ``expandnets::triton_conv2d`` and its backward."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton

from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.conv2d import (conv2d_dgrad_kernel, conv2d_fwd_kernel, conv2d_wgrad_kernel, depthwise_dgrad_kernel,
                     depthwise_fwd_kernel, depthwise_wgrad_kernel)
from expandnets_cuda.kernels.triton.offsets import needs_wide_offsets

Tensor = torch.Tensor


def _out_size(size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def _like_layout(x: Tensor, shape) -> Tensor:
    """A new tensor of ``shape`` in ``x``'s memory format (channels_last stays channels_last)."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=fmt)


def _precision(dtype: torch.dtype, exact: bool) -> str:
    """fp32 follows torch (TF32 unless exact); half types use their tensor-core dots."""
    if dtype == torch.float32 and not exact:
        return "tf32"
    return "ieee"


def _geometry(x: Tensor, w: Tensor, stride, padding, dilation, groups):
    N, C, H, W = x.shape
    O, CG, KH, KW = w.shape
    P, Q = _out_size(H, KH, stride[0], padding[0], dilation[0]), _out_size(W, KW, stride[1], padding[1], dilation[1])
    return N, C, H, W, O, CG, KH, KW, P, Q, O // groups


def _is_depthwise(C: int, O: int, groups: int) -> bool:
    return groups == C == O and groups > 1


@torch.library.custom_op("expandnets::triton_conv2d", mutates_args=())
def conv2d(x: Tensor, w: Tensor, b: Optional[Tensor], stride: List[int], padding: List[int],
           dilation: List[int], groups: int, exact: bool) -> Tensor:
    w = w.contiguous()
    N, C, H, W, O, CG, KH, KW, P, Q, OG = _geometry(x, w, stride, padding, dilation, groups)
    y = _like_layout(x, (N, O, P, Q))
    geometry = (KH, KW, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    has_bias = b is not None
    bias = b.contiguous() if has_bias else w  # never read when has_bias is False
    mode = dict(ACC=lc.acc_type(x.dtype), WIDE=needs_wide_offsets(x, w, y))
    if _is_depthwise(C, O, groups):
        launch = lc.depthwise_tiles(C)
        depthwise_fwd_kernel[(triton.cdiv(N * P * Q, launch["BM"]), triton.cdiv(C, launch["BC"]))](
            x, w, bias, y, N, C, H, W, P, Q, *geometry, *x.stride(), *y.stride(),
            HAS_BIAS=has_bias, **mode, **launch.kwargs())
        return y
    precision = _precision(x.dtype, exact)
    tiles = lc.conv_fwd_tiles(OG, CG * KH * KW, lc.dot_kind(x.dtype, precision))
    conv2d_fwd_kernel[lambda meta: (triton.cdiv(N * P * Q, meta["BM"]), triton.cdiv(OG, tiles["BN"]), groups)](
        x, w, bias, y, N, H, W, P, Q, *geometry, CG, OG, *x.stride(), *y.stride(),
        HAS_BIAS=has_bias, PRECISION=precision, **mode, **tiles)
    return y


@conv2d.register_fake
def _conv2d_fake(x, w, b, stride, padding, dilation, groups, exact):
    N, C, H, W, O, CG, KH, KW, P, Q, OG = _geometry(x, w, stride, padding, dilation, groups)
    return _like_layout(x, (N, O, P, Q))


@torch.library.custom_op("expandnets::triton_conv2d_backward", mutates_args=())
def conv2d_backward(dy: Tensor, x: Tensor, w: Tensor, has_bias: bool, stride: List[int], padding: List[int],
                    dilation: List[int], groups: int, exact: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """``(dx, dw, db)``; ``db`` is empty when the convolution has no bias."""
    w = w.contiguous()
    N, C, H, W, O, CG, KH, KW, P, Q, OG = _geometry(x, w, stride, padding, dilation, groups)
    geometry = (KH, KW, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    acc = lc.acc_type(x.dtype)
    dx = _like_layout(x, x.shape)
    splits, chunk = lc.wgrad_splits(N * P * Q)
    if _is_depthwise(C, O, groups):
        launch = lc.depthwise_tiles(C)
        wide = needs_wide_offsets(dy, w, dx, x)
        depthwise_dgrad_kernel[(triton.cdiv(N * H * W, launch["BM"]), triton.cdiv(C, launch["BC"]))](
            dy, w, dx, N, C, H, W, P, Q, *geometry, *dy.stride(), *dx.stride(), ACC=acc, WIDE=wide,
            **launch.kwargs())
        dw_part = torch.empty((splits, C * KH * KW), device=x.device, dtype=_partial_dtype(x))
        db_part = torch.empty((splits, C), device=x.device, dtype=dw_part.dtype)
        depthwise_wgrad_kernel[(triton.cdiv(C, launch["BC"]), splits)](
            x, dy, dw_part, db_part, N, C, H, W, P, Q, *geometry, chunk, *x.stride(), *dy.stride(),
            HAS_BIAS=has_bias, ACC=acc, WIDE=wide or needs_wide_offsets(dw_part), **launch.kwargs())
    else:
        precision = _precision(x.dtype, exact)
        kind = lc.dot_kind(x.dtype, precision)
        tiles = lc.conv_dgrad_tiles(CG, OG * KH * KW, kind)
        conv2d_dgrad_kernel[lambda meta: (triton.cdiv(N * H * W, meta["BM"]), triton.cdiv(CG, tiles["BN"]), groups)](
            dy, w, dx, N, H, W, P, Q, *geometry, CG, OG, *dy.stride(), *dx.stride(),
            ACC=acc, PRECISION=precision, WIDE=needs_wide_offsets(dy, w, dx), **tiles)
        tiles = lc.conv_wgrad_tiles(OG, CG * KH * KW, kind)
        dw_part = torch.empty((splits, O * CG * KH * KW), device=x.device, dtype=_partial_dtype(x))
        db_part = torch.empty((splits, O), device=x.device, dtype=dw_part.dtype)
        grid = (triton.cdiv(OG, tiles["BM"]), triton.cdiv(CG * KH * KW, tiles["BN"]), groups * splits)
        conv2d_wgrad_kernel[grid](
            x, dy, dw_part, db_part, N, H, W, P, Q, *geometry, CG, OG, O, chunk, splits,
            *x.stride(), *dy.stride(), HAS_BIAS=has_bias, ACC=acc, PRECISION=precision,
            WIDE=needs_wide_offsets(x, dy, dw_part), **tiles)
    dw = dw_part.sum(0).to(w.dtype).reshape(w.shape)
    db = db_part.sum(0).to(x.dtype) if has_bias else x.new_empty(0)
    return dx, dw, db


def _partial_dtype(x: Tensor) -> torch.dtype:
    """Partial weight-gradient sums keep the accumulator's precision until the final reduction."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@conv2d_backward.register_fake
def _conv2d_backward_fake(dy, x, w, has_bias, stride, padding, dilation, groups, exact):
    return _like_layout(x, x.shape), torch.empty_like(w), x.new_empty(w.shape[0] if has_bias else 0)


def _setup(ctx, inputs, output):
    x, w, b, stride, padding, dilation, groups, exact = inputs
    ctx.save_for_backward(x, w)
    ctx.args = (b is not None, stride, padding, dilation, groups, exact)


def _grad(ctx, dy):
    x, w = ctx.saved_tensors
    has_bias = ctx.args[0]
    dx, dw, db = conv2d_backward(dy, x, w, *ctx.args)
    return dx, dw, (db if has_bias else None), None, None, None, None, None


conv2d.register_autograd(_grad, setup_context=_setup)
