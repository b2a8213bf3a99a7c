"""Fake implementations and autograd of the work-list composition ops of ``expandnets_cuda._C``
(``expandnets::cuda_cl_network`` and its backward: csrc/expandnets/worklist.h), and
``compose_cl_network``, the CUDA composer's ``cl_network``: many CL/FC units of any shapes in two
launches forward (weights, biases) and three backward (five with biases), whatever their number.

The op takes the units' tensors as lists in the canonical shapes (worklist_layout.py) and returns
one flat buffer per result kind; its backward saves only the inputs. The device table of the
units is built by the binding once per set of input pointers and shapes and reused afterwards,
so a step whose parameters are updated in place makes no host-to-device copy (CUDA-graph safe
after one warm-up step)."""
from __future__ import annotations

import torch

from expandnets_cuda import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)
from expandnets_cuda.kernels.cuda import worklist_layout

cl_network = torch.ops.expandnets.cuda_cl_network
cl_network_backward = torch.ops.expandnets.cuda_cl_network_backward

torch.library.register_fake("expandnets::cuda_cl_network")(worklist_layout.network_fake)
torch.library.register_fake("expandnets::cuda_cl_network_backward")(worklist_layout.network_backward_fake)

_setup_context, _backward = worklist_layout.autograd_of(cl_network_backward)
torch.library.register_autograd("expandnets::cuda_cl_network", _backward, setup_context=_setup_context)


def compose_cl_network(units):
    """``Composer.cl_network``: ``units`` as ``cl``'s argument tuples ``(w1, b1, w2, b2, w3, b3, groups)``
    (FC as 1x1 taps, one group; all with biases or none; one dtype and CUDA device) -> the list of
    ``(W_eff (g*o, i, kh, kw), b_eff (g*o,) or None)``, differentiable w.r.t. every tensor."""
    return worklist_layout.compose_units(units, cl_network)
