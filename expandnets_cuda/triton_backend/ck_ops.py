"""``torch.library`` op around one CK fold (two stacked kernels -> one), with fake and autograd."""
from __future__ import annotations

from typing import Tuple

import torch
import triton

from .ck_compose import ck_fold_bwd_earlier_kernel, ck_fold_bwd_later_kernel, ck_fold_fwd_kernel
from .cl_ops import acc_type, block

Tensor = torch.Tensor


def _dims(later: Tensor, earlier: Tensor):
    O, C, A, A2 = later.shape
    I, B, B2 = earlier.shape[1:]
    return O, C, I, A, A2, B, B2


@torch.library.custom_op("expandnets::triton_ck_fold", mutates_args=())
def ck_fold(later: Tensor, earlier: Tensor) -> Tensor:
    later, earlier = later.contiguous(), earlier.contiguous()
    O, C, I, A, A2, B, B2 = _dims(later, earlier)
    out = torch.empty((O, I, A + B - 1, A2 + B2 - 1), device=later.device, dtype=later.dtype)
    BO, BI, BC = block(O), block(I), block(C)
    grid = ((A + B - 1) * (A2 + B2 - 1), triton.cdiv(O, BO), triton.cdiv(I, BI))
    ck_fold_fwd_kernel[grid](later, earlier, out, O, C, I, A, A2, B, B2, BO=BO, BI=BI, BC=BC,
                             ACC=acc_type(later.dtype))
    return out


@ck_fold.register_fake
def _ck_fold_fake(later, earlier):
    O, C, I, A, A2, B, B2 = _dims(later, earlier)
    return later.new_empty((O, I, A + B - 1, A2 + B2 - 1))


@torch.library.custom_op("expandnets::triton_ck_fold_backward", mutates_args=())
def ck_fold_backward(grad: Tensor, later: Tensor, earlier: Tensor) -> Tuple[Tensor, Tensor]:
    grad, later, earlier = grad.contiguous(), later.contiguous(), earlier.contiguous()
    O, C, I, A, A2, B, B2 = _dims(later, earlier)
    d_later, d_earlier = torch.empty_like(later), torch.empty_like(earlier)
    BO, BI, BC = block(O), block(I), block(C)
    acc = acc_type(later.dtype)
    ck_fold_bwd_later_kernel[(A * A2, triton.cdiv(O, BO), triton.cdiv(C, BC))](
        grad, earlier, d_later, O, C, I, A, A2, B, B2, BO=BO, BC=BC, BI=BI, ACC=acc)
    ck_fold_bwd_earlier_kernel[(B * B2, triton.cdiv(C, BC), triton.cdiv(I, BI))](
        grad, later, d_earlier, O, C, I, A, A2, B, B2, BC=BC, BI=BI, BO=BO, ACC=acc)
    return d_later, d_earlier


@ck_fold_backward.register_fake
def _ck_fold_backward_fake(grad, later, earlier):
    return torch.empty_like(later), torch.empty_like(earlier)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad(ctx, grad):
    return ck_fold_backward(grad, *ctx.saved_tensors)


ck_fold.register_autograd(_grad, setup_context=_setup)
