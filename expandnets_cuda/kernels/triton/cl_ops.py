"""``torch.library`` ops around the CL/FC composition kernels, with fake (meta) implementations
and autograd, so they run under ``torch.compile(fullgraph=True)`` as opaque custom ops.

Canonical shapes: ``W1 (G, A, I)``, ``W2 (G, C, A, T)``, ``W3 (G, O, C)`` -> ``W (G, O, I, T)``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton

from expandnets_cuda.compose.cl import cl_bias_fold_backward
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.cl_compose import (cl_bias_fold_kernel, cl_compose_bwd_w1_kernel, cl_compose_bwd_w2_kernel,
                         cl_compose_bwd_w3_kernel, cl_compose_fwd_kernel)
from expandnets_cuda.kernels.triton.offsets import needs_wide_offsets

Tensor = torch.Tensor


def _dims(w1: Tensor, w2: Tensor, w3: Tensor):
    G, A, I = w1.shape
    _, C, _, T = w2.shape
    O = w3.shape[1]
    return G, A, I, C, O, T


@torch.library.custom_op("expandnets::triton_cl_compose", mutates_args=())
def cl_compose(w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    w1, w2, w3 = w1.contiguous(), w2.contiguous(), w3.contiguous()
    G, A, I, C, O, T = _dims(w1, w2, w3)
    out = torch.empty((G, O, I, T), device=w2.device, dtype=w2.dtype)
    launch = lc.cl_compose_fwd(A, I, C, O, w2.dtype)
    grid = (G * T, triton.cdiv(O, launch["BO"]), triton.cdiv(I, launch["BI"]))
    cl_compose_fwd_kernel[grid](w1, w2, w3, out, A, I, C, O, T, ACC=lc.acc_type(w2.dtype),
                                WIDE=needs_wide_offsets(w1, w2, w3, out), **launch.kwargs())
    return out


@cl_compose.register_fake
def _cl_compose_fake(w1, w2, w3):
    G, A, I, C, O, T = _dims(w1, w2, w3)
    return w2.new_empty((G, O, I, T))


@torch.library.custom_op("expandnets::triton_cl_compose_backward", mutates_args=())
def cl_compose_backward(grad: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    grad, w1, w2, w3 = grad.contiguous(), w1.contiguous(), w2.contiguous(), w3.contiguous()
    G, A, I, C, O, T = _dims(w1, w2, w3)
    dw1, dw2, dw3 = torch.empty_like(w1), torch.empty_like(w2), torch.empty_like(w3)
    mode = dict(ACC=lc.acc_type(w2.dtype), WIDE=needs_wide_offsets(grad, w1, w2, w3))
    launch = lc.cl_compose_bwd_w1(A, I, C, O, w2.dtype)
    cl_compose_bwd_w1_kernel[(G, triton.cdiv(A, launch["BA"]), triton.cdiv(I, launch["BI"]))](
        grad, w2, w3, dw1, A, I, C, O, T, **mode, **launch.kwargs())
    launch = lc.cl_compose_bwd_w2(A, I, C, O, w2.dtype)
    cl_compose_bwd_w2_kernel[(G * T, triton.cdiv(C, launch["BC"]), triton.cdiv(A, launch["BA"]))](
        grad, w1, w3, dw2, A, I, C, O, T, **mode, **launch.kwargs())
    launch = lc.cl_compose_bwd_w3(A, I, C, O, w2.dtype)
    cl_compose_bwd_w3_kernel[(G, triton.cdiv(O, launch["BO"]), triton.cdiv(C, launch["BC"]))](
        grad, w1, w2, dw3, A, I, C, O, T, **mode, **launch.kwargs())
    return dw1, dw2, dw3


@cl_compose_backward.register_fake
def _cl_compose_backward_fake(grad, w1, w2, w3):
    return torch.empty_like(w1), torch.empty_like(w2), torch.empty_like(w3)


def _cl_compose_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _cl_compose_grad(ctx, grad):
    return cl_compose_backward(grad, *ctx.saved_tensors)


cl_compose.register_autograd(_cl_compose_grad, setup_context=_cl_compose_setup)


@torch.library.custom_op("expandnets::triton_cl_bias_fold", mutates_args=())
def cl_bias_fold(w2: Tensor, w3: Tensor, b1: Tensor, b2: Tensor, b3: Tensor) -> Tensor:
    w2, w3, b1, b2, b3 = (t.contiguous() for t in (w2, w3, b1, b2, b3))
    G, C, A, T = w2.shape
    O = w3.shape[1]
    out = torch.empty((G, O), device=w2.device, dtype=w2.dtype)
    launch = lc.cl_bias_fold(A, C, O, T, w2.dtype)
    cl_bias_fold_kernel[(G, triton.cdiv(O, launch["BO"]))](
        w2, w3, b1, b2, b3, out, A, C, O, T, ACC=lc.acc_type(w2.dtype), WIDE=needs_wide_offsets(w2, w3),
        **launch.kwargs())
    return out


@cl_bias_fold.register_fake
def _cl_bias_fold_fake(w2, w3, b1, b2, b3):
    return w2.new_empty((w2.shape[0], w3.shape[1]))


def _bias_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _bias_grad(ctx, grad):
    w2, w3, b1, b2, _ = ctx.saved_tensors
    return cl_bias_fold_backward(grad, w2, w3, b1, b2)


cl_bias_fold.register_autograd(_bias_grad, setup_context=_bias_setup)
