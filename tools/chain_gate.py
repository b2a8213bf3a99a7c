"""The chain kernels as the sm_90 compile gate (``tools/triton_sm90_gate.py``) sees them:
``GATE_SPECS`` lists each kernel with its pointer arguments, its mode constexprs and every launch
configuration ``chain_ops.chain_config`` can return (``chain_ops.config_space``), so the gate
compiles exactly what ships. Imported by the gate only (it needs the gate's ``gate_specs``)."""
from __future__ import annotations

from typing import List

import torch

from tools import gate_specs as gs
from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.chain_kernels import chain_bwd_in_kernel, chain_bwd_out_kernel, chain_dgrad1_kernel, chain_fwd_kernel
from expandnets_cuda.kernels.triton.chain_ops import config_space, dgrad1_blocks

_TILES = {
    "chain_fwd_kernel": ("BP", "BK", "BA", "BC", "BO"),
    "chain_bwd_out_kernel": ("BP", "BK", "BA", "BC", "BO"),
    "chain_bwd_in_kernel": ("BP", "BK", "BA", "BC"),
}


def launches(kernel: str, dtype: torch.dtype, precision: str = "ieee") -> List[lc.Launch]:
    """Every (tiles, num_warps, num_stages) the chain ops launch ``kernel`` with for ``dtype``."""
    out = set()
    for cfg in config_space(dtype, backward=kernel != "chain_fwd_kernel"):
        if kernel == "chain_dgrad1_kernel":
            for mg in (1, 17, 33):
                for k2 in (1, 17, 33):
                    bm, bk = dgrad1_blocks(mg, k2)
                    out.add(lc.Launch.of(cfg.num_warps, cfg.num_stages, BP=cfg.BP, BM=bm, BK=bk))
        else:
            out.add(lc.Launch.of(cfg.num_warps, cfg.num_stages, **{t: getattr(cfg, t) for t in _TILES[kernel]}))
    return sorted(out, key=lambda launch: launch.tiles)


def _modes(**flags):
    def modes(dtype):
        return {**{name: (False, True) for name in flags}, "ACC": (lc.acc_type(dtype),),
                "PRECISION": lc.precisions(dtype), "WIDE": (False, True)}
    return modes


GATE_SPECS = [
    gs.KernelSpec(chain_fwd_kernel, ("x", "w1", "b1", "w2", "b2", "w3", "b3", "y"),
                  _modes(HAS_BIAS=1, HAS_L3=1, RELU=1), launches=launches),
    gs.KernelSpec(chain_bwd_out_kernel, ("x", "w1", "b1", "w2", "b2", "w3", "dy", "dz2", "dw3_part", "db2_part"),
                  _modes(HAS_BIAS=1, RELU=1), partial_pointers=("dz2", "dw3_part", "db2_part"), launches=launches),
    gs.KernelSpec(chain_bwd_in_kernel, ("x", "w1", "b1", "w2", "dz2", "dx_acc", "dz1", "dw1_part", "db1_part",
                                        "dw2_part"),
                  _modes(HAS_BIAS=1, RELU=1, POINTWISE1=1),
                  partial_pointers=("dz2", "dx_acc", "dz1", "dw1_part", "db1_part", "dw2_part"), launches=launches),
    gs.KernelSpec(chain_dgrad1_kernel, ("dz1", "w1", "dx"), _modes(), partial_pointers=("dz1",), launches=launches),
]
