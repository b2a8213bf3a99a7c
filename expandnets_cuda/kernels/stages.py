"""What the hand-written backends (Triton, CUDA) share around their ops: the composer and the
convolver built from a backend's ops, autocast, the TF32 switch, and FC's linear as a 1x1 conv.

A kernel backend supplies ops of the same signatures (``KernelOps``); everything else a composer
or convolver does (argument shapes, FC as CL, the CK Function that recomputes partial kernels
with the fold kernel, device checks, autocast) is the same for both and lives here once.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import torch

from expandnets_cuda.backends.types import Composer, Convolver
from expandnets_cuda.compose.ck import compose_ck
from expandnets_cuda.compose.cl import cl_operands
from expandnets_cuda.compose.fc import fc_through_cl


class KernelOps(NamedTuple):
    """A backend's ops: ``cl_compose(W1 (g,a,i), W2 (g,c,a,t), W3 (g,o,c)) -> (g,o,i,t)``,
    ``cl_bias_fold(W2, W3, b1, b2, b3) -> (g,o)``, ``ck_fold(later, earlier) -> K``,
    ``ck_fold_backward(dK, later, earlier) -> (d later, d earlier)``, the network composers
    ``cl_network(units)`` / ``ck_network(units)`` (``Composer``'s), and
    ``conv2d(x, w, b, stride, padding, dilation, groups, exact)``. ``contiguous``: the ops need
    contiguous weights (the Triton kernels take strides; the CUDA kernels do not)."""

    cl_compose: Callable
    cl_bias_fold: Callable
    ck_fold: Callable
    ck_fold_backward: Callable
    cl_network: Callable
    ck_network: Callable
    conv2d: Callable
    contiguous: bool


def autocast_inputs(*tensors):
    """Custom ops are not autocast by torch: cast here, like ``F.conv2d`` would under autocast."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)


def exact_fp32() -> bool:
    """Same switch as cuDNN: float32 convolutions use TF32 unless ``torch.backends.cudnn.allow_tf32`` is off."""
    return not torch.backends.cudnn.allow_tf32


def linear_as_conv1x1(conv2d_op: Callable, x: torch.Tensor, weight: torch.Tensor, bias, exact: bool) -> torch.Tensor:
    """``F.linear`` through a convolution op: every row of ``x`` is a 1x1 image."""
    rows = x.reshape(-1, x.shape[-1], 1, 1)
    y = conv2d_op(rows, weight.contiguous().reshape(*weight.shape, 1, 1), bias, [1, 1], [0, 0], [1, 1], 1, exact)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def _maybe_contiguous(t, contiguous: bool):
    return t.contiguous() if contiguous and t is not None else t


def kernel_composer(name: str, ops: KernelOps, check_device: Callable, triton_kernels: bool) -> Composer:
    def cl(w1, b1, w2, b2, w3, b3, groups: int):
        check_device(w2)
        args = cl_operands(w1, b1, w2, b2, w3, b3, groups, contiguous=ops.contiguous)
        weight = ops.cl_compose(args.w1, args.w2, args.w3).reshape(args.weight_shape)
        if b1 is None:
            return weight, None
        return weight, ops.cl_bias_fold(args.w2, args.w3, args.b1, args.b2, args.b3).reshape(-1)

    def fold(later, earlier):
        return ops.ck_fold(_maybe_contiguous(later, ops.contiguous), _maybe_contiguous(earlier, ops.contiguous))

    def fold_backward(grad, later, earlier):
        return ops.ck_fold_backward(*(_maybe_contiguous(t, ops.contiguous) for t in (grad, later, earlier)))

    def ck(weights, biases):
        check_device(weights[0])
        # The lean Function: saves the weights only and recomputes partial kernels with the fold kernel.
        return compose_ck(weights, biases, fold=fold, fold_backward=fold_backward)

    def cl_network(units):
        units = list(units)
        if units:
            check_device(units[0][2])
        return ops.cl_network(units)

    def ck_network(units):
        units = list(units)
        if units:
            check_device(units[0][0][0])
        return ops.ck_network(units)

    return Composer(name, cl, ck, partial(fc_through_cl, cl), device_types=("cuda",), cl_network=cl_network,
                    ck_network=ck_network, triton_kernels=triton_kernels, batches_groups=True)


def kernel_convolver(name: str, ops: KernelOps, check_device: Callable, triton_kernels: bool) -> Convolver:
    def conv2d(x, weight, bias, stride, padding, dilation, groups):
        check_device(x)
        x, weight, bias = autocast_inputs(x, weight, bias)
        weight, bias = _maybe_contiguous(weight, ops.contiguous), _maybe_contiguous(bias, ops.contiguous)
        return ops.conv2d(x, weight, bias, list(stride), list(padding), list(dilation), groups, exact_fp32())

    def linear(x, weight, bias):
        check_device(x)
        x, weight, bias = autocast_inputs(x, weight, bias)
        return linear_as_conv1x1(ops.conv2d, x, weight, _maybe_contiguous(bias, ops.contiguous), exact_fp32())

    return Convolver(name, conv2d, linear, device_types=("cuda",), triton_kernels=triton_kernels)
