"""The CUDA convolver: the compact convolution (and FC's linear, as a 1x1 convolution) through the
CUDA C++ implicit-GEMM and depthwise kernels."""
from __future__ import annotations


from expandnets_cuda.backends import Convolver
from expandnets_cuda.kernel_convolver import autocast_inputs, exact_fp32, linear_as_conv1x1
from expandnets_cuda.cuda_backend import conv_ops
from expandnets_cuda.cuda_backend.composer import check_device


def conv2d(x, weight, bias, stride, padding, dilation, groups):
    check_device(x)
    x, weight, bias = autocast_inputs(x, weight, bias)
    bias = bias.contiguous() if bias is not None else None
    return conv_ops.conv2d(x, weight.contiguous(), bias, list(stride), list(padding), list(dilation), groups,
                           exact_fp32())


def linear(x, weight, bias):
    check_device(x)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return linear_as_conv1x1(conv_ops.conv2d, x, weight, bias.contiguous() if bias is not None else None, exact_fp32())


def load_convolver() -> Convolver:
    return Convolver("cuda", conv2d, linear, device_types=("cuda",))
