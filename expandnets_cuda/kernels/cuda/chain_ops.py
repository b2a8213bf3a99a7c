"""Fake (meta) implementations and autograd of the chain ops that ``expandnets_cuda._C`` defines:
``expandnets::cuda_chain`` and ``expandnets::cuda_chain_backward``, with the arguments of the
Triton chain op (``kernels/triton/chain_ops.py``). Saved for backward: the input and the weights
only; the backward recomputes every intermediate on chip.
"""
from __future__ import annotations

import torch

from expandnets_cuda import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)
from expandnets_cuda.kernels.chain_geometry import geometry, like_layout

chain_op = torch.ops.expandnets.cuda_chain
chain_backward_op = torch.ops.expandnets.cuda_chain_backward


@torch.library.register_fake("expandnets::cuda_chain")
def _chain_fake(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
    geo = geometry(x, w1, w2, w3, pads, dilation1, stride, dilation, groups)
    return like_layout(x, (geo.N, geo.out_channels, geo.P, geo.Q))


@torch.library.register_fake("expandnets::cuda_chain_backward")
def _chain_backward_fake(grad, x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
    def like(t):
        return torch.empty_like(t) if t is not None else x.new_empty(0)
    return (like_layout(x, x.shape), like(w1), like(b1), like(w2), like(b2), like(w3),
            like(b3 if w3 is not None else None))


def _setup(ctx, inputs, output):
    x, w1, b1, w2, b2, w3, b3, *args = inputs
    ctx.save_for_backward(x, w1, b1, w2, b2, w3, b3)
    ctx.args = args


def _grad(ctx, grad):
    x, w1, b1, w2, b2, w3, b3 = ctx.saved_tensors
    dx, dw1, db1, dw2, db2, dw3, db3 = chain_backward_op(grad, x, w1, b1, w2, b2, w3, b3, *ctx.args)
    has_bias, has_l3 = b1 is not None, w3 is not None
    return (dx, dw1, db1 if has_bias else None, dw2, db2 if has_bias else None,
            dw3 if has_l3 else None, db3 if has_bias and has_l3 else None) + (None,) * len(ctx.args)


torch.library.register_autograd("expandnets::cuda_chain", _grad, setup_context=_setup)


def chain(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
    """The op with contiguous weights (the kernels' layout); activations keep their strides."""
    contiguous = [t.contiguous() if t is not None else None for t in (w1, b1, w2, b2, w3, b3)]
    w1, b1, w2, b2, w3, b3 = contiguous
    return chain_op(x, w1, b1, w2, b2, w3, b3, list(pads), list(dilation1), list(stride), list(dilation), groups,
                    relu, exact)
