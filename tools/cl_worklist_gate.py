"""The work-list composition kernels (``cl_worklist``) as the sm_90 compile gate
(``tools/triton_sm90_gate.py``) sees them: pointers, modes and every launch configuration
``cl_worklist_ops.launches_for`` can return, so the gate compiles exactly what ships. The metadata
pointers (``table``, ``units``, ``items``) are declared with the weight dtype like every other
pointer; the kernels cast them to int64 pointers. Imported by the gate only."""
from __future__ import annotations

import itertools
from typing import List

import torch

from tools import gate_specs as gs
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.cl_worklist import (cl_network_bias_bwd_kernel, cl_network_bias_kernel, cl_network_bwd_w1_kernel,
                          cl_network_bwd_w2_kernel, cl_network_bwd_w3_kernel, cl_network_fwd_kernel)
from expandnets_cuda.kernels.triton.cl_worklist_ops import launches_for

_ROLE = {"cl_network_fwd_kernel": "fwd", "cl_network_bias_kernel": "bias", "cl_network_bwd_w1_kernel": "bwd_w1",
         "cl_network_bwd_w2_kernel": "bwd_w2", "cl_network_bwd_w3_kernel": "bwd_w3", "cl_network_bias_bwd_kernel": "bias_bwd"}


def launches(kernel: str, dtype: torch.dtype, precision: str = "ieee") -> List[lc.Launch]:
    """Every launch of ``kernel``: its rule at every combination of extents (the rules see an
    extent only through a power of two clipped to at most 64, so ``lc.EXTENTS`` reach them all)."""
    role = _ROLE[kernel]
    found = {launches_for(a, i, c, o, t, dtype)[role] for a, i, c, o, t in itertools.product(lc.EXTENTS, repeat=5)}
    return sorted(found, key=lambda launch: (launch.tiles, launch.num_warps))


def _modes(bias_switch: bool):
    def modes(dtype):
        out = {"ACC": (lc.acc_type(dtype),), "WIDE": (False, True)}
        return {"HAS_BIAS": (False, True), **out} if bias_switch else out
    return modes


_META = ("table", "units", "items")
GATE_SPECS = [
    gs.KernelSpec(cl_network_fwd_kernel, (*_META, "out"), _modes(False), launches=launches),
    gs.KernelSpec(cl_network_bias_kernel, (*_META, "out"), _modes(False), launches=launches),
    gs.KernelSpec(cl_network_bwd_w1_kernel, (*_META, "grad", "dw1"), _modes(False), launches=launches),
    gs.KernelSpec(cl_network_bwd_w2_kernel, (*_META, "grad", "grad_b", "dw2"), _modes(True), launches=launches),
    gs.KernelSpec(cl_network_bwd_w3_kernel, (*_META, "grad", "grad_b", "dw3"), _modes(True), launches=launches),
    gs.KernelSpec(cl_network_bias_bwd_kernel, (*_META, "grad_b", "db1", "db2"), _modes(False), launches=launches),
]
