"""Fake implementations and autograd of the work-list composition ops of ``expandnets_cuda._C``
(``expandnets::cuda_cl_many`` and its backward: csrc/expandnets/worklist.h), and
``compose_cl_many``, the CUDA composer's ``cl_many``: many CL/FC units of any shapes in two
launches forward (weights, biases) and three backward (five with biases), whatever their number.

The op takes the units' tensors as lists in the canonical shapes (worklist_layout.py) and returns
one flat buffer per result kind; its backward saves only the inputs. The device table of the
units is built by the binding once per set of input pointers and shapes and reused afterwards,
so a step whose parameters are updated in place makes no host-to-device copy (CUDA-graph safe
after one warm-up step)."""
from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)
from . import worklist_layout

cl_many = torch.ops.expandnets.cuda_cl_many
cl_many_backward = torch.ops.expandnets.cuda_cl_many_backward

torch.library.register_fake("expandnets::cuda_cl_many")(worklist_layout.many_fake)
torch.library.register_fake("expandnets::cuda_cl_many_backward")(worklist_layout.many_backward_fake)


def _save_inputs(ctx, inputs, output):
    w1s, w2s, w3s, b1s, b2s, b3s = inputs
    ctx.units, ctx.biases = len(w2s), len(b1s) > 0
    ctx.save_for_backward(*w1s, *w2s, *w3s, *b1s, *b2s, *b3s)


def _cl_many_grad(ctx, grad_w, grad_bias):
    n, saved = ctx.units, ctx.saved_tensors
    w1s, w2s, w3s = (list(saved[k * n:(k + 1) * n]) for k in range(3))
    b1s, b2s, b3s = (list(saved[k * n:(k + 1) * n]) for k in range(3, 6)) if ctx.biases else ([], [], [])
    grad_bias = grad_bias.contiguous() if ctx.biases else grad_w.new_empty((0,))
    dw1, dw2, dw3, db1, db2 = cl_many_backward(grad_w.contiguous(), grad_bias, w1s, w2s, w3s, b1s, b2s, b3s)
    split = worklist_layout.split_like
    return (split(dw1, w1s), split(dw2, w2s), split(dw3, w3s), split(db1, b1s), split(db2, b2s),
            split(grad_bias, b3s))


torch.library.register_autograd("expandnets::cuda_cl_many", _cl_many_grad, setup_context=_save_inputs)


def compose_cl_many(units):
    """``Composer.cl_many``: ``units`` as ``cl``'s argument tuples ``(w1, b1, w2, b2, w3, b3, groups)``
    (FC as 1x1 taps, one group; all with biases or none; one dtype and CUDA device) -> the list of
    ``(W_eff (g*o, i, kh, kw), b_eff (g*o,) or None)``, differentiable w.r.t. every tensor."""
    return worklist_layout.compose_units(units, cl_many)
