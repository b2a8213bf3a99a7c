"""The CK work-list kernels (``ck_worklist``) as the sm_90 compile gate (``tools/triton_sm90_gate.py``)
sees them: pointers, modes and every launch configuration ``ck_worklist_ops.launches_for`` can
return (the one-fold kernels' tile rules, so their declared sets). The metadata pointers
(``table``, ``units``, ``items``) are declared with the weight dtype like every other pointer; the
kernels cast them to int64 pointers. Imported by the gate only."""
from __future__ import annotations

import itertools
from typing import List

import torch

from tools import gate_specs as gs
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.ck_worklist import ck_network_fold_bwd_earlier_kernel, ck_network_fold_bwd_later_kernel, ck_network_fold_fwd_kernel
from expandnets_cuda.kernels.triton.ck_worklist_ops import launches_for

_ROLE = {"ck_network_fold_fwd_kernel": "fwd", "ck_network_fold_bwd_later_kernel": "bwd_later",
         "ck_network_fold_bwd_earlier_kernel": "bwd_earlier"}


def launches(kernel: str, dtype: torch.dtype, precision: str = "ieee") -> List[lc.Launch]:
    """Every launch of ``kernel``: its rule at every combination of extents (``lc.EXTENTS`` reach
    every value of the rules, which see an extent only through a clipped power of two)."""
    role = _ROLE[kernel]
    found = {launches_for(o, c, i, dtype)[role] for o, c, i in itertools.product(lc.EXTENTS, repeat=3)}
    return sorted(found, key=lambda launch: (launch.tiles, launch.num_warps))


_META = ("table", "units", "items")
GATE_SPECS = [
    gs.KernelSpec(ck_network_fold_fwd_kernel, (*_META, "out"), gs.compose_modes, launches=launches),
    gs.KernelSpec(ck_network_fold_bwd_later_kernel, (*_META, "d_later"), gs.compose_modes, launches=launches),
    gs.KernelSpec(ck_network_fold_bwd_earlier_kernel, (*_META, "d_earlier"), gs.compose_modes, launches=launches),
]
