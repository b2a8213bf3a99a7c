"""The ``triton-chain`` runner: whole units through the Triton chain kernels (``chain_ops``), and
the Triton convolution for the layers one chain launch does not cover."""
from __future__ import annotations

import torch

from expandnets_cuda.backends import BackendUnavailableError
from expandnets_cuda.triton_backend import chain_ops
from expandnets_cuda.triton_backend.composer import check_device, interpreter_enabled
from expandnets_cuda.triton_backend.convolver import conv2d


def chain(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
    check_device(x)
    return chain_ops.chain(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact)


def load_chain():
    from expandnets_cuda.chain_backends import ChainRunner
    if not torch.cuda.is_available() and not interpreter_enabled():
        raise BackendUnavailableError(
            "the Triton chain kernels need a CUDA device, none is visible, and the Triton interpreter is off; "
            "run on a machine with a CUDA GPU, or set TRITON_INTERPRET=1 before importing expandnets_cuda (tests)")
    return ChainRunner("triton-chain", chain, conv2d, device_types=("cuda",))
