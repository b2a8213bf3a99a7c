"""What the hand-written convolvers (Triton, CUDA) share around their custom ops: autocast,
the TF32 switch, and FC's linear as a 1x1 convolution."""
from __future__ import annotations

from typing import Callable

import torch


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
