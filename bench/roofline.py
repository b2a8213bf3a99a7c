"""The floor the work a fused network adds to a training step sets: a roofline per phase.

Each phase of the added work has multiply-adds (at the GEMM rate) and bytes it must move (at the
copy bandwidth), both rates measured in the same run; its floor is the larger of the two times.

* ``compose_forward``: the composition in the orders the cost model picks (CL/FC: the cheaper of
  ``(W3 W2) W1`` and ``W3 (W2 W1)``; CK: every fold). Bytes: read the expanded parameters, write
  the composed weight and bias.
* ``compose_backward``: the backward plan the composer runs (CL: ``cl_backward_plan``; CK: two
  GEMMs per fold, plus the partial folds again where a unit does not keep them). Bytes: read the
  composed weight's gradient and the parameters, write every parameter's gradient.
* ``optimizer``: SGD with momentum over the parameters the expansion adds (expanded minus compact):
  read parameter, gradient and momentum, write parameter and momentum (5 passes, a fused update).

Intermediates (``W2 W1``, partial kernels) are not counted as traffic: a perfect implementation
could keep them in cache. So the floor is what no implementation can beat on this machine.

    rates = measure_rates(device)                  # Rates(gemm_gflops, copy_gbps)
    work = added_work(fused_model, compact_model)  # {phase: Work(macs, bytes)}
    floors = floor_ms(work, rates)                 # {phase: ms, ..., "total": ms}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable

import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.compose import products
from expandnets_cuda.timing import call_seconds

PHASES = ("compose_forward", "compose_backward", "optimizer")
SGD_MOMENTUM_PASSES = 5  # read p, g, buf; write buf, p


@dataclass(frozen=True)
class Rates:
    gemm_gflops: float  # float32 GEMM shaped like the composition's large ones
    copy_gbps: float  # bytes read + written per second by a large copy


@dataclass(frozen=True)
class Work:
    macs: float
    bytes: float

    def __add__(self, other: "Work") -> "Work":
        return Work(self.macs + other.macs, self.bytes + other.bytes)


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after a warm-up: a floor wants the rate the machine
    can reach, not one a busy spell slowed down."""
    return min(call_seconds(fn, device, repeats + 3)[3:])


def gemm_rate(device: torch.device, repeats: int = 30) -> float:
    """GFLOP/s of a float32 GEMM shaped like the composition's large ones (the best of ``repeats``)."""
    a = torch.randn(12544, 256, device=device)
    b = torch.randn(256, 64, device=device)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / _best_seconds(lambda: a @ b, device, repeats) / 1e9


def copy_bandwidth(device: torch.device, megabytes: int = 64, repeats: int = 30) -> float:
    """GB/s moved (read + written) by copying a ``megabytes`` float32 tensor, larger than the caches
    (the best of ``repeats``)."""
    src = torch.randn(megabytes * (1 << 20) // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best_seconds(lambda: dst.copy_(src), device, repeats) / 1e9


def measure_rates(device: torch.device) -> Rates:
    device = torch.device(device)
    return Rates(gemm_rate(device), copy_bandwidth(device))


def _numel(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() for t in tensors)


def unit_work(unit: nn.Module) -> Dict[str, Work]:
    """Forward and backward work of composing one (linear) fused unit for one step."""
    weights = [layer.weight for layer in unit.layers]
    size = weights[0].element_size()
    params = _numel(unit.layers.parameters())
    with torch.no_grad():
        composed, composed_bias = unit.composed_weight(backend="torch")
    out = composed.numel() + (composed_bias.numel() if composed_bias is not None else 0)
    strategy = getattr(unit.spec, "strategy", "fc")
    if strategy == "ck":
        shapes = [(w.shape[0], w.shape[1], w.shape[2]) for w in weights]
        left_first = products.ck_folds_left_first_shapes(shapes)
        folds = products.fold_costs(shapes, left_first)
        again = 0 if products.ck_keeps_partials(shapes) else sum(folds[:-1])
        forward, backward = sum(folds), again + 2 * sum(folds)
    else:
        groups = 1 if strategy == "fc" else unit.spec.groups
        w1, w2, w3 = weights
        i, a = w1.shape[1], w1.shape[0] // groups
        c, o = w2.shape[0] // groups, w3.shape[0] // groups
        t = w2.shape[2] * w2.shape[3] if w2.dim() == 4 else 1
        forward = groups * min(products.cl_cost(i, a, c, o, t, 1))
        # The plan the composer runs: a small forward intermediate is kept, not formed again.
        kept = products.cl_kept_intermediate(i, a, c, o, t, groups)
        backward = groups * products.cl_backward_plan(i, a, c, o, t, kept).cost
    return {"compose_forward": Work(forward, (params + out) * size),
            "compose_backward": Work(backward, (out + 2 * params) * size)}


def fused_units(model: nn.Module):
    return [m for m in model.modules()
            if isinstance(m, (ec.FusedExpandConv2d, ec.FusedExpandLinear)) and not m.nonlinear]


def added_work(fused: nn.Module, compact: nn.Module) -> Dict[str, Work]:
    """Per phase, the work ``fused``'s training step does beyond ``compact``'s (module doc)."""
    work = {phase: Work(0, 0) for phase in PHASES}
    for unit in fused_units(fused):
        for phase, w in unit_work(unit).items():
            work[phase] = work[phase] + w
    extra = max(0, _numel(fused.parameters()) - _numel(compact.parameters()))
    size = next(fused.parameters()).element_size()
    work["optimizer"] = Work(0, SGD_MOMENTUM_PASSES * extra * size)
    return work


def floor_ms(work: Dict[str, Work], rates: Rates) -> Dict[str, float]:
    """Per phase ``max(2 * macs / GEMM rate, bytes / copy bandwidth)`` in ms, and their ``total``."""
    out = {phase: max(2 * w.macs / (rates.gemm_gflops * 1e9), w.bytes / (rates.copy_gbps * 1e9)) * 1e3
           for phase, w in work.items()}
    out["total"] = sum(out.values())
    return out
