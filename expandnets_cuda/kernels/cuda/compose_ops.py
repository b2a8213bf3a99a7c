"""Fake (meta) implementations and autograd of the composition ops that ``expandnets_cuda._C``
defines (``expandnets::cuda_cl_compose``, ``cuda_cl_bias_fold``, ``cuda_ck_fold`` and their
backwards), so they run under ``torch.compile(fullgraph=True)`` and train like the Triton ops.

Canonical shapes, all contiguous: CL ``W1 (G, A, I)``, ``W2 (G, C, A, T)``, ``W3 (G, O, C)`` ->
``W (G, O, I, T)``; CK ``later (O, C, a, a2)``, ``earlier (C, I, b, b2)`` -> ``(O, I, a+b-1, a2+b2-1)``.
"""
from __future__ import annotations

import torch

from expandnets_cuda import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)
from expandnets_cuda.compose.cl import cl_bias_fold_backward

cl_compose = torch.ops.expandnets.cuda_cl_compose
cl_compose_backward = torch.ops.expandnets.cuda_cl_compose_backward
cl_bias_fold = torch.ops.expandnets.cuda_cl_bias_fold
ck_fold = torch.ops.expandnets.cuda_ck_fold
ck_fold_backward = torch.ops.expandnets.cuda_ck_fold_backward


@torch.library.register_fake("expandnets::cuda_cl_compose")
def _cl_compose_fake(w1, w2, w3):
    return w2.new_empty((w1.shape[0], w3.shape[1], w1.shape[2], w2.shape[3]))


@torch.library.register_fake("expandnets::cuda_cl_compose_backward")
def _cl_compose_backward_fake(grad, w1, w2, w3):
    return torch.empty_like(w1), torch.empty_like(w2), torch.empty_like(w3)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _cl_compose_grad(ctx, grad):
    return cl_compose_backward(grad.contiguous(), *ctx.saved_tensors)


torch.library.register_autograd("expandnets::cuda_cl_compose", _cl_compose_grad, setup_context=_save_inputs)


@torch.library.register_fake("expandnets::cuda_cl_bias_fold")
def _cl_bias_fold_fake(w2, w3, b1, b2, b3):
    return w2.new_empty((w2.shape[0], w3.shape[1]))


def _cl_bias_fold_grad(ctx, grad):
    w2, w3, b1, b2, _ = ctx.saved_tensors
    return cl_bias_fold_backward(grad, w2, w3, b1, b2)


torch.library.register_autograd("expandnets::cuda_cl_bias_fold", _cl_bias_fold_grad, setup_context=_save_inputs)


@torch.library.register_fake("expandnets::cuda_ck_fold")
def _ck_fold_fake(later, earlier):
    return later.new_empty((later.shape[0], earlier.shape[1], later.shape[2] + earlier.shape[2] - 1,
                            later.shape[3] + earlier.shape[3] - 1))


@torch.library.register_fake("expandnets::cuda_ck_fold_backward")
def _ck_fold_backward_fake(grad, later, earlier):
    return torch.empty_like(later), torch.empty_like(earlier)


def _ck_fold_grad(ctx, grad):
    return ck_fold_backward(grad.contiguous(), *ctx.saved_tensors)


torch.library.register_autograd("expandnets::cuda_ck_fold", _ck_fold_grad, setup_context=_save_inputs)
