"""Every launch configuration of the Triton kernels, in one place.

The wrappers (``cl_ops``, ``ck_ops``, ``conv_ops``) take their tile edges, ``num_warps`` and
``num_stages`` from the rules below; the convolution GEMMs autotune over ``GEMM_CONFIGS`` /
``WGRAD_CONFIGS``. ``declared_launches`` derives, from the same rules, the finite set of
configurations each kernel can be launched with: the sm_90 compile gate
(``tools/triton_sm90_gate.py``) compiles exactly those, and a test checks that every launch the
wrappers make is one of them, so the gate cannot drift from what ships.

Register budget (what the gate measured on sm_90, see docs/kernels.md): output tiles above 32x32 get
8 warps, float64 output tiles stay 32 wide, the composition kernels' reduction edges are 16 (at
32 the operand rows of their exact FMA dots spilled beside the accumulators) and they run
unpipelined (COMPOSE_STAGES).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

import torch
import triton
import triton.language as tl


def register_budget(num_warps: int) -> int:
    """Registers a thread may use (``maxnreg``): the block's share of the 64K register file, at
    most 255. Stated explicitly because, left to itself, ptxas trades a few spilled registers
    for occupancy (ahead of time for sm_90: 72 registers and 12 B spilled without a budget,
    98 and none with one)."""
    return min(255, 65536 // (32 * num_warps))


@dataclass(frozen=True)
class Launch:
    """Tile edges (constexprs) and launch shape of one kernel launch."""

    tiles: Tuple[Tuple[str, int], ...]
    num_warps: int
    num_stages: int

    @staticmethod
    def of(num_warps: int, num_stages: int, **tiles: int) -> "Launch":
        return Launch(tuple(sorted(tiles.items())), num_warps, num_stages)

    @property
    def maxnreg(self) -> int:
        return register_budget(self.num_warps)

    def __getitem__(self, name: str) -> int:
        return dict(self.tiles)[name]

    def kwargs(self) -> Dict[str, int]:
        """Keyword arguments of a ``kernel[grid](...)`` call."""
        return dict(self.tiles, num_warps=self.num_warps, num_stages=self.num_stages, maxnreg=self.maxnreg)


def block(n: int, cap: int = 64) -> int:
    """Power-of-two tile edge covering ``n``: at least 16 (``tl.dot``'s minimum), at most ``cap``."""
    return max(16, min(cap, triton.next_power_of_2(n)))


def acc_type(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def warps_for(tile_elements: int) -> int:
    """Four warps up to a 32x32 output tile, eight above: the exact (FMA) dots keep a thread's
    rows of both operands in registers beside the accumulator."""
    return 8 if tile_elements > 32 * 32 else 4


# ----------------------------------------------------------------------------- composition
# The CL/FC composition kernels (a product of three matrices): an output tile (m x n) accumulated over a middle extent r, whose
# intermediate (r x n or m x r) is itself reduced over s. Weight-sized work: one fixed rule, no
# autotuning (the chain is launched once per step and its cost is a few microseconds).

# No software pipelining: the nested loops of the exact (FMA) dots gain nothing from it, and at
# two stages ptxas spilled even 16x32 tiles (ahead-of-time figures: 72 registers + 20 B spilled
# at 2 stages, 47 registers at 1).
COMPOSE_STAGES = 1


def cl_compose_tiles(m: int, n: int, r: int, s: int, dtype: torch.dtype) -> Tuple[int, int, int, int, int]:
    out_cap = 32 if dtype == torch.float64 else 64
    bm, bn, br, bs = block(m, out_cap), block(n, out_cap), block(r, 16), block(s, 16)
    return bm, bn, br, bs, warps_for(bm * bn)


def cl_compose_fwd(A: int, I: int, C: int, O: int, dtype: torch.dtype) -> Launch:
    BO, BI, BC, BA, warps = cl_compose_tiles(O, I, C, A, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BO=BO, BI=BI, BC=BC, BA=BA)


def cl_compose_bwd_w1(A: int, I: int, C: int, O: int, dtype: torch.dtype) -> Launch:
    BA, BI, BC, BO, warps = cl_compose_tiles(A, I, C, O, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BA=BA, BI=BI, BC=BC, BO=BO)


def cl_compose_bwd_w2(A: int, I: int, C: int, O: int, dtype: torch.dtype) -> Launch:
    BC, BA, BO, BI, warps = cl_compose_tiles(C, A, O, I, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BC=BC, BA=BA, BO=BO, BI=BI)


def cl_compose_bwd_w3(A: int, I: int, C: int, O: int, dtype: torch.dtype) -> Launch:
    BO, BC, BA, BI, warps = cl_compose_tiles(O, C, A, I, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BO=BO, BC=BC, BA=BA, BI=BI)


def cl_bias_fold(A: int, C: int, O: int, T: int, dtype: torch.dtype) -> Launch:
    """Matrix-vector products: a (BC x BK) tile of W2 over the flat (a, t) axis."""
    return Launch.of(4, COMPOSE_STAGES, BO=block(O, 32), BC=block(C, 32), BK=block(A * T, 64))


def ck_fold_tiles(m: int, n: int, k: int, dtype: torch.dtype) -> Tuple[int, int, int, int]:
    out_cap = 32 if dtype == torch.float64 else 64
    bm, bn = block(m, out_cap), block(n, out_cap)
    return bm, bn, block(k, 16), warps_for(bm * bn)


def ck_fold_fwd(O: int, C: int, I: int, dtype: torch.dtype) -> Launch:
    BO, BI, BC, warps = ck_fold_tiles(O, I, C, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BO=BO, BI=BI, BC=BC)


def ck_fold_bwd_later(O: int, C: int, I: int, dtype: torch.dtype) -> Launch:
    BO, BC, BI, warps = ck_fold_tiles(O, C, I, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BO=BO, BC=BC, BI=BI)


def ck_fold_bwd_earlier(O: int, C: int, I: int, dtype: torch.dtype) -> Launch:
    BC, BI, BO, warps = ck_fold_tiles(C, I, O, dtype)
    return Launch.of(warps, COMPOSE_STAGES, BC=BC, BI=BI, BO=BO)


# ----------------------------------------------------------------------------- convolution
# Implicit GEMMs whose pixel extent (N*P*Q, from batch 1 to thousands of images) decides the
# best tile: autotuned, keyed on the problem shape. The channel edges come from the layer (a
# rule); the autotuner picks the pixel edge and the launch shape among the configs measured to
# fit the register file for the launch's kind of dot (the gate re-checks every one). BM >= 64
# with 4 or 8 warps lets tl.dot use Hopper's warpgroup MMA for TF32/bf16/fp16.
TENSOR_CORE, FMA32, FMA64 = "tensor-core", "fma-fp32", "fma-fp64"


def dot_kind(dtype: torch.dtype, precision: str) -> str:
    """TF32/bf16/fp16 dots run on tensor cores with operands in shared memory; exact float32
    and float64 dots are FMA loops holding operand rows in registers (the heavy ones)."""
    if dtype == torch.float64:
        return FMA64
    return FMA32 if dtype == torch.float32 and precision == "ieee" else TENSOR_CORE


@dataclass(frozen=True)
class TuneConfig:
    tile: str  # the constexpr the autotuner chooses
    size: int
    num_warps: int
    num_stages: int
    kinds: Tuple[str, ...]  # the dot kinds it fits without spilling (measured, see docs/kernels.md)
    wide_kinds: Tuple[str, ...]  # the same with 64-bit index arithmetic (WIDE), which costs registers

    def fits(self, kind: str, wide: bool) -> bool:
        return kind in (self.wide_kinds if wide else self.kinds)

    def triton_config(self) -> triton.Config:
        return triton.Config({self.tile: self.size}, num_warps=self.num_warps, num_stages=self.num_stages,
                             maxnreg=register_budget(self.num_warps))


ALL_KINDS = (TENSOR_CORE, FMA32, FMA64)
# The first config fits every kind, narrow and wide: the interpreter runs only it, and pruning
# falls back to it.
GEMM_CONFIGS = [
    TuneConfig("BM", 64, 8, 3, ALL_KINDS, ALL_KINDS),
    TuneConfig("BM", 64, 4, 3, (TENSOR_CORE, FMA64), ()),
    TuneConfig("BM", 128, 8, 3, (TENSOR_CORE, FMA64), (FMA64,)),
    TuneConfig("BM", 64, 4, 2, (TENSOR_CORE,), ()),
    TuneConfig("BM", 64, 8, 2, (FMA32,), (FMA32,)),
]
# Unpipelined first: software pipelining keeps a second set of the gathered operand tiles live,
# which the exact (FMA) float32 dot cannot afford with 64-bit indices.
WGRAD_CONFIGS = [
    TuneConfig("BK", 16, 8, 1, ALL_KINDS, ALL_KINDS),
    TuneConfig("BK", 16, 8, 3, ALL_KINDS, (TENSOR_CORE, FMA64)),
    TuneConfig("BK", 32, 8, 3, (TENSOR_CORE,), (TENSOR_CORE,)),
    TuneConfig("BK", 16, 4, 2, (TENSOR_CORE,), (TENSOR_CORE,)),
]
# The pixel chunks of the split weight gradient are multiples of every BK above.
WGRAD_CHUNK_FLOOR = 32


def reduction_edge(K: int, kind: str) -> int:
    """The GEMM's K edge: 32 for tensor-core dots, 16 for the FMA dots (operand rows in registers)."""
    return block(K, 32 if kind == TENSOR_CORE else 16)


def conv_fwd_tiles(OG: int, K: int, kind: str) -> Dict[str, int]:
    """The forward's channel edges: BN over output channels, BK over (input channel, tap)."""
    return dict(BN=block(OG), BK=reduction_edge(K, kind))


def conv_dgrad_tiles(CG: int, K: int, kind: str) -> Dict[str, int]:
    return dict(BN=block(CG), BK=reduction_edge(K, kind))


def conv_wgrad_tiles(OG: int, K: int, kind: str) -> Dict[str, int]:
    """The weight gradient: BM over output channels, BN over (input channel, tap)."""
    return dict(BM=block(OG), BN=block(K))


def tuned(configs: List[TuneConfig]) -> List[triton.Config]:
    """Autotuner configs; under the Triton interpreter only the first (the interpreter is a
    correctness check, autotuning would run every config and multiply CI time)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        configs = configs[:1]
    return [c.triton_config() for c in configs]


def prune_for(dtype_arg: str, configs: List[TuneConfig]):
    """``early_config_prune`` keeping the configs that fit the launch's kind of dot and offset width."""
    by_key = {(c.tile, c.size, c.num_warps, c.num_stages): c for c in configs}

    def key(tc: triton.Config):
        ((tile, size),) = tc.kwargs.items()
        return tile, size, tc.num_warps, tc.num_stages

    def prune(triton_configs, named_args, **kwargs):
        kind = dot_kind(named_args[dtype_arg].dtype, kwargs["PRECISION"])
        keep = [tc for tc in triton_configs if by_key[key(tc)].fits(kind, bool(kwargs["WIDE"]))]
        return keep or triton_configs[:1]
    return prune


def depthwise_tiles(C: int) -> Launch:
    """Elementwise over taps (no dot, memory-bound): 32 pixels by up to 32 channels a program,
    nothing to pipeline."""
    return Launch.of(4, 1, BM=32, BC=block(C, 32))


def wgrad_splits(npq: int) -> Tuple[int, int]:
    """Split the pixel reduction into chunks: enough programs for a GPU, at most 64 partials."""
    floor = WGRAD_CHUNK_FLOOR
    splits = max(1, min(64, npq // max(floor, 1024)))
    chunk = triton.cdiv(triton.cdiv(npq, splits), floor) * floor
    return triton.cdiv(npq, chunk), chunk


# ----------------------------------------------------------------------------- declared space
# Extents that reach every value of every rule above: the rules depend on an extent only through
# next_power_of_2 clipped to at most 64, so the powers of two from 1 to 128 cover them all.
EXTENTS = (1, 16, 32, 64, 128)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _unique(launches: Iterable[Launch]) -> List[Launch]:
    return sorted(set(launches), key=lambda launch: (launch.tiles, launch.num_warps, launch.num_stages))


def _grid(n: int):
    return itertools.product(EXTENTS, repeat=n)


def _tuned_launches(configs: List[TuneConfig], tile_sets: Iterable[Dict[str, int]], kind: str, wide: bool):
    return [Launch.of(c.num_warps, c.num_stages, **tiles, **{c.tile: c.size})
            for tiles in tile_sets for c in configs if c.fits(kind, wide)]


def precisions(dtype: torch.dtype) -> Tuple[str, ...]:
    """The dot precisions a dtype can run with (``conv_ops._precision``)."""
    return ("tf32", "ieee") if dtype == torch.float32 else ("ieee",)


# kernel -> (its rule, how many extents the rule takes before the dtype)
RULES = {"cl_compose_fwd_kernel": (cl_compose_fwd, 4), "cl_compose_bwd_w1_kernel": (cl_compose_bwd_w1, 4),
         "cl_compose_bwd_w2_kernel": (cl_compose_bwd_w2, 4), "cl_compose_bwd_w3_kernel": (cl_compose_bwd_w3, 4),
         "cl_bias_fold_kernel": (cl_bias_fold, 4), "ck_fold_fwd_kernel": (ck_fold_fwd, 3),
         "ck_fold_bwd_later_kernel": (ck_fold_bwd_later, 3), "ck_fold_bwd_earlier_kernel": (ck_fold_bwd_earlier, 3)}
TUNED = {"conv2d_fwd_kernel": (conv_fwd_tiles, GEMM_CONFIGS), "conv2d_dgrad_kernel": (conv_dgrad_tiles, GEMM_CONFIGS),
         "conv2d_wgrad_kernel": (conv_wgrad_tiles, WGRAD_CONFIGS)}


def declared_launches(kernel: str, dtype: torch.dtype, precision: str = "ieee", wide: bool = False) -> List[Launch]:
    """Every (tiles, num_warps, num_stages) the wrappers can launch ``kernel`` with for ``dtype``
    (and, for the autotuned convolution GEMMs, dot ``precision`` and offset width: their configs
    that fit, for every outcome of the channel-tile rule)."""
    if kernel in RULES:
        rule, arity = RULES[kernel]
        return _unique(rule(*dims, dtype) for dims in _grid(arity))
    if kernel.startswith("depthwise_"):
        return _unique(depthwise_tiles(c) for c in EXTENTS)
    tile_rule, configs = TUNED[kernel]
    kind = dot_kind(dtype, precision)
    tile_sets = [dict(t) for t in sorted({tuple(sorted(tile_rule(a, b, kind).items())) for a, b in _grid(2)})]
    return _unique(_tuned_launches(configs, tile_sets, kind, wide))
