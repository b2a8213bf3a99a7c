"""``torch.library`` op around one CK fold (two stacked kernels -> one), with fake and autograd."""
from __future__ import annotations

from typing import Tuple

import torch
import triton

from expandnets_cuda.kernels.triton.ck_compose import ck_fold_bwd_earlier_kernel, ck_fold_bwd_later_kernel, ck_fold_fwd_kernel
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.offsets import needs_wide_offsets

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
    launch = lc.ck_fold_fwd(O, C, I, later.dtype)
    grid = ((A + B - 1) * (A2 + B2 - 1), triton.cdiv(O, launch["BO"]), triton.cdiv(I, launch["BI"]))
    ck_fold_fwd_kernel[grid](later, earlier, out, O, C, I, A, A2, B, B2, ACC=lc.acc_type(later.dtype),
                             WIDE=needs_wide_offsets(later, earlier, out), **launch.kwargs())
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
    mode = dict(ACC=lc.acc_type(later.dtype), WIDE=needs_wide_offsets(grad, later, earlier))
    launch = lc.ck_fold_bwd_later(O, C, I, later.dtype)
    ck_fold_bwd_later_kernel[(A * A2, triton.cdiv(O, launch["BO"]), triton.cdiv(C, launch["BC"]))](
        grad, earlier, d_later, O, C, I, A, A2, B, B2, **mode, **launch.kwargs())
    launch = lc.ck_fold_bwd_earlier(O, C, I, later.dtype)
    ck_fold_bwd_earlier_kernel[(B * B2, triton.cdiv(C, launch["BC"]), triton.cdiv(I, launch["BI"]))](
        grad, later, d_earlier, O, C, I, A, A2, B, B2, **mode, **launch.kwargs())
    return d_later, d_earlier


@ck_fold_backward.register_fake
def _ck_fold_backward_fake(grad, later, earlier):
    return torch.empty_like(later), torch.empty_like(earlier)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grad(ctx, grad):
    return ck_fold_backward(grad, *ctx.saved_tensors)


ck_fold.register_autograd(_grad, setup_context=_setup)
