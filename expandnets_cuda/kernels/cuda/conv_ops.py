"""Fake (meta) implementations and autograd of the convolution ops that ``expandnets_cuda._C``
defines: ``expandnets::cuda_conv2d(x, w, b, stride, padding, dilation, groups, exact)`` and
``expandnets::cuda_conv2d_backward`` -> ``(dx, dw, db)`` (``db`` empty without a bias).

``x`` and the gradients may have any strides (channels_last needs no copy; outputs keep ``x``'s
memory format); ``w`` and ``b`` must be contiguous. ``exact`` turns TF32 off for float32.
"""
from __future__ import annotations

import torch

from expandnets_cuda import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)

conv2d = torch.ops.expandnets.cuda_conv2d
conv2d_backward = torch.ops.expandnets.cuda_conv2d_backward


def _out_size(size: int, kernel: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (kernel - 1) - 1) // stride + 1


def like_layout(x: torch.Tensor, shape) -> torch.Tensor:
    """A new tensor of ``shape`` in ``x``'s memory format: the rule the C++ op allocates by."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=fmt)


@torch.library.register_fake("expandnets::cuda_conv2d")
def _conv2d_fake(x, w, b, stride, padding, dilation, groups, exact):
    N, _, H, W = x.shape
    O, _, KH, KW = w.shape
    P = _out_size(H, KH, stride[0], padding[0], dilation[0])
    Q = _out_size(W, KW, stride[1], padding[1], dilation[1])
    return like_layout(x, (N, O, P, Q))


@torch.library.register_fake("expandnets::cuda_conv2d_backward")
def _conv2d_backward_fake(grad, x, w, has_bias, stride, padding, dilation, groups, exact):
    return like_layout(x, x.shape), torch.empty_like(w), x.new_empty(w.shape[0] if has_bias else 0)


def _setup(ctx, inputs, output):
    x, w, b, stride, padding, dilation, groups, exact = inputs
    ctx.save_for_backward(x, w)
    ctx.args = (b is not None, stride, padding, dilation, groups, exact)


def _grad(ctx, grad):
    x, w = ctx.saved_tensors
    has_bias = ctx.args[0]
    dx, dw, db = conv2d_backward(grad, x, w, *ctx.args)
    return dx, dw, (db if has_bias else None), None, None, None, None, None


torch.library.register_autograd("expandnets::cuda_conv2d", _grad, setup_context=_setup)
