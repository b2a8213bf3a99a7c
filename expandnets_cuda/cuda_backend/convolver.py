"""The CUDA convolver: the compact convolution (and FC's linear, as a 1x1 convolution) through the
CUDA C++ implicit-GEMM and depthwise kernels."""
from __future__ import annotations

import torch

from ..backends import Convolver
from . import conv_ops
from .composer import check_device


def _autocast_inputs(*tensors):
    """Custom ops are not autocast by torch: cast here, like F.conv2d would under autocast."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)


def _exact() -> bool:
    # Same switch as cuDNN: float32 convolutions use TF32 unless torch.backends.cudnn.allow_tf32 is off.
    return not torch.backends.cudnn.allow_tf32


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    check_device(x)
    x, weight, bias = _autocast_inputs(x, weight, bias)
    bias = bias.contiguous() if bias is not None else None
    return conv_ops.conv2d(x, weight.contiguous(), bias, list(stride), list(padding), list(dilation), groups,
                           _exact())


def linear(x, weight, bias):
    check_device(x)
    x, weight, bias = _autocast_inputs(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1], 1, 1)
    bias = bias.contiguous() if bias is not None else None
    y = conv_ops.conv2d(rows, weight.contiguous().reshape(*weight.shape, 1, 1), bias, [1, 1], [0, 0], [1, 1], 1,
                        _exact())
    return y.reshape(*x.shape[:-1], weight.shape[0])


def load_convolver() -> Convolver:
    return Convolver("cuda", conv2d, linear, device_types=("cuda",))
