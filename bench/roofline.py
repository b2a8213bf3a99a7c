"""The floor the work a fused network adds to a training step sets: a roofline per phase.

Each phase of the added work has multiply-adds (at the GEMM rate) and bytes it must move (at the
copy bandwidth), both rates measured in the same run (``bench.step_profile`` times their probes in
the same round-robin as the steps and takes their best round: on a shared machine the best of 30
back-to-back calls moved between 83 and 172 GFLOP/s and put the floor above the step's own added
time); its floor is the larger of the two times.

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

    rates = measure_rates(device)                  # Rates(gemm_gflops, copy_gbps); or time
                                                   # rate_probes(device) beside the steps
    work = added_work(fused_model, compact_model)  # {phase: Work(macs, bytes)}
    floors = floor_ms(work, rates)                 # {phase: ms, ..., "total": ms}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable

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


# The probes the rates come from: a GEMM shaped like the composition's large ones, and a copy of
# a float32 tensor larger than the caches.
GEMM_SHAPE = (12544, 256, 64)  # (m, k, n)
COPY_MEGABYTES = 64


def rate_probes(device: torch.device) -> Dict[str, Callable[[], object]]:
    """``{"gemm": fn, "copy": fn}``: the calls whose times give ``rates_from_seconds``; time them
    in the same round-robin as the steps their floor is compared with, so both see one machine."""
    m, k, n = GEMM_SHAPE
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    src = torch.randn(COPY_MEGABYTES * (1 << 20) // 4, device=device)
    dst = torch.empty_like(src)
    return {"gemm": lambda: a @ b, "copy": lambda: dst.copy_(src)}


def rates_from_seconds(gemm_seconds: float, copy_seconds: float) -> Rates:
    m, k, n = GEMM_SHAPE
    return Rates(2 * m * k * n / gemm_seconds / 1e9, 2 * COPY_MEGABYTES * (1 << 20) / copy_seconds / 1e9)


def measure_rates(device: torch.device, repeats: int = 30) -> Rates:
    """The probes' best of ``repeats`` calls each (one measurement, for callers with no round-robin)."""
    device = torch.device(device)
    probes = rate_probes(device)
    return rates_from_seconds(_best_seconds(probes["gemm"], device, repeats), _best_seconds(probes["copy"], device, repeats))


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
