"""Hand-written Triton kernels. Imported only when the ``triton`` backend is first asked for.

On a GPU they compile for the device; on a CPU they run under the Triton interpreter when
``TRITON_INTERPRET=1`` is set before this package is imported (that is how CI tests them).
One stem per op: ``<op>.py`` holds the ``@triton.jit`` kernels (what the sm_90 gate in tools/
compiles alone), ``<op>_ops.py`` their launch and ``torch.library`` registration;
``launch_configs`` the launch rules they share. ``load_*`` build the backend's records.
"""
from __future__ import annotations

from expandnets_cuda.backends import triton_mode
from expandnets_cuda.backends.types import ChainRunner, Composer, Convolver


def _ops():
    triton_mode.require_triton()
    from expandnets_cuda.kernels.stages import KernelOps
    from expandnets_cuda.kernels.triton import ck_ops, ck_worklist_ops, cl_ops, cl_worklist_ops, conv_ops
    return KernelOps(cl_ops.cl_compose, cl_ops.cl_bias_fold, ck_ops.ck_fold, ck_ops.ck_fold_backward,
                     cl_worklist_ops.compose_cl_network, ck_worklist_ops.compose_ck_network, conv_ops.conv2d,
                     contiguous=False)


def load_composer() -> Composer:
    from expandnets_cuda.kernels.stages import kernel_composer
    return kernel_composer("triton", _ops(), triton_mode.check_device, triton_kernels=True)


def load_convolver() -> Convolver:
    from expandnets_cuda.kernels.stages import kernel_convolver
    return kernel_convolver("triton", _ops(), triton_mode.check_device, triton_kernels=True)


def load_chain() -> ChainRunner:
    convolver = load_convolver()
    from expandnets_cuda.kernels.triton import chain_ops

    def chain(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact):
        triton_mode.check_device(x)
        return chain_ops.chain(x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation, groups, relu, exact)

    return ChainRunner("triton-chain", chain, convolver)
