"""What the sm_90 compile gate (``tools/triton_sm90_gate.py``) needs to know about each kernel
besides its launch configurations (``launch_configs.declared_launches``): which arguments are
pointers, and the values its mode constexprs (accumulator, precision, bias, wide offsets) take
for each input dtype. A kernel module elsewhere in this package can declare its own kernels the
same way, as a module-level ``GATE_SPECS`` list.
"""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Tuple

import torch

from expandnets_cuda.kernels.triton import launch_configs as lc
from expandnets_cuda.kernels.triton.ck_compose import ck_fold_bwd_earlier_kernel, ck_fold_bwd_later_kernel, ck_fold_fwd_kernel
from expandnets_cuda.kernels.triton.cl_compose import (cl_bias_fold_kernel, cl_compose_bwd_w1_kernel, cl_compose_bwd_w2_kernel,
                         cl_compose_bwd_w3_kernel, cl_compose_fwd_kernel)
from expandnets_cuda.kernels.triton.conv2d import (conv2d_dgrad_kernel, conv2d_fwd_kernel, conv2d_wgrad_kernel, depthwise_dgrad_kernel,
                     depthwise_fwd_kernel, depthwise_wgrad_kernel)

Modes = Dict[str, Tuple]


def jit_function(kernel):
    """The JITFunction (InterpretedFunction under the interpreter) under any @triton.autotune /
    @triton.heuristics wrappers, or None for anything else."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    while not isinstance(kernel, (JITFunction, InterpretedFunction)):
        if not hasattr(kernel, "fn"):
            return None
        kernel = kernel.fn
    return kernel


@dataclass(frozen=True)
class Variant:
    """One compile job: every constexpr bound, the launch shape, the pointer element types."""

    kernel: str
    dtype: torch.dtype
    constexprs: Dict[str, object]
    num_warps: int
    num_stages: int
    pointer_dtypes: Dict[str, torch.dtype]

    @property
    def maxnreg(self) -> int:
        return lc.register_budget(self.num_warps)


@dataclass(frozen=True)
class KernelSpec:
    kernel: object  # the @triton.jit function, possibly under @triton.autotune
    pointers: Tuple[str, ...]
    modes: Callable[[torch.dtype], Modes]
    partial_pointers: Tuple[str, ...] = ()  # float32 (float64 for float64) partial sums
    launches: Callable[..., List[lc.Launch]] = lc.declared_launches  # (kernel, dtype, precision[, wide])
    dtypes: Tuple[torch.dtype, ...] = field(default=lc.FLOAT_DTYPES)

    @property
    def jit_function(self):
        return jit_function(self.kernel)

    @property
    def name(self) -> str:
        return self.jit_function.__name__

    def variants(self, dtype: torch.dtype) -> Iterator[Variant]:
        modes = self.modes(dtype)
        partial = torch.float64 if dtype == torch.float64 else torch.float32
        ptrs = {p: (partial if p in self.partial_pointers else dtype) for p in self.pointers}
        for combo in itertools.product(*modes.values()):
            mode = dict(zip(modes, combo))
            # A launch rule that depends on the offset width takes it as ``wide``.
            width = {"wide": mode["WIDE"]} if "wide" in inspect.signature(self.launches).parameters else {}
            for launch in self.launches(self.name, dtype, mode.get("PRECISION", "ieee"), **width):
                yield Variant(self.name, dtype, {**dict(launch.tiles), **mode}, launch.num_warps,
                              launch.num_stages, ptrs)


def compose_modes(dtype):
    return {"ACC": (lc.acc_type(dtype),), "WIDE": (False, True)}


def gemm_modes(bias: bool):
    def modes(dtype):
        out = {"ACC": (lc.acc_type(dtype),), "PRECISION": lc.precisions(dtype), "WIDE": (False, True)}
        return {"HAS_BIAS": (False, True), **out} if bias else out
    return modes


def depthwise_modes(bias: bool):
    def modes(dtype):
        out = {"ACC": (lc.acc_type(dtype),), "WIDE": (False, True)}
        return {"HAS_BIAS": (False, True), **out} if bias else out
    return modes


SPECS = [
    KernelSpec(cl_compose_fwd_kernel, ("w1", "w2", "w3", "out"), compose_modes),
    KernelSpec(cl_compose_bwd_w1_kernel, ("grad", "w2", "w3", "dw1"), compose_modes),
    KernelSpec(cl_compose_bwd_w2_kernel, ("grad", "w1", "w3", "dw2"), compose_modes),
    KernelSpec(cl_compose_bwd_w3_kernel, ("grad", "w1", "w2", "dw3"), compose_modes),
    KernelSpec(cl_bias_fold_kernel, ("w2", "w3", "b1", "b2", "b3", "out"), compose_modes),
    KernelSpec(ck_fold_fwd_kernel, ("later", "earlier", "out"), compose_modes),
    KernelSpec(ck_fold_bwd_later_kernel, ("grad", "earlier", "d_later"), compose_modes),
    KernelSpec(ck_fold_bwd_earlier_kernel, ("grad", "later", "d_earlier"), compose_modes),
    KernelSpec(conv2d_fwd_kernel, ("x", "w", "b", "y"), gemm_modes(bias=True)),
    KernelSpec(conv2d_dgrad_kernel, ("dy", "w", "dx"), gemm_modes(bias=False)),
    KernelSpec(conv2d_wgrad_kernel, ("x", "dy", "dw_part", "db_part"), gemm_modes(bias=True),
               partial_pointers=("dw_part", "db_part")),
    KernelSpec(depthwise_fwd_kernel, ("x", "w", "b", "y"), depthwise_modes(bias=True)),
    KernelSpec(depthwise_dgrad_kernel, ("dy", "w", "dx"), depthwise_modes(bias=False)),
    KernelSpec(depthwise_wgrad_kernel, ("x", "dy", "dw_part", "db_part"), depthwise_modes(bias=True),
               partial_pointers=("dw_part", "db_part")),
]
