"""Where the time a fused network adds to a training step goes, and the floor its arithmetic sets.

    python -m bench.step_profile --form cl --rate 8 --threads 2      # SmallNet k=7, batch 128, CPU

Profiles a few steps of the compact network and of the fused one (``torch.profiler``) and gives
each operator's self time to the part of the step that called it: the *composition* (the
composers' Functions forward and backward, and the network composer's call), the *optimizer*
(``optimizer.step``), or the *network* (convolutions, norms, pooling, loss: what the compact step
runs as well). It prints the time per part for both and the largest operators the fused step
adds. The floor: the composition's multiply-adds per step (the orders the cost model picks, with
the recomputation its backward does instead of saving) at the GEMM rate measured in the same
run. The optimizer's share is the user's choice (it updates the expanded parameters, as it would
for the unfused chain) and is shown as measured.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections import defaultdict
from typing import Dict, Tuple

import torch
from torch import nn

if __package__ in (None, ""):  # `python bench/step_profile.py` as well as `python -m bench.step_profile`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

import expandnets_cuda as ec  # noqa: E402
from expandnets_cuda import composition_products as products  # noqa: E402
from expandnets_cuda.reference import layer_params  # noqa: E402

from .network import Variant, build  # noqa: E402

PARTS = ("network", "composition", "optimizer")
# Names of the profiler ranges each part runs under (a prefix match on any enclosing range).
_COMPOSITION = ("_ComposeCL", "_ComposeCK", "expandnets::", "network_compose")
_OPTIMIZER = ("Optimizer.",)


def _part(event) -> str:
    while event is not None:
        if any(marker in event.name for marker in _COMPOSITION):
            return "composition"
        if event.name.startswith(_OPTIMIZER):
            return "optimizer"
        event = event.cpu_parent
    return "network"


def profile_step(variant: Variant, steps: int = 5, warmup: int = 3) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Milliseconds per step by part, and by operator (name and input shapes), of ``variant.step``."""
    for _ in range(warmup):
        variant.step()
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(steps):
            variant.step()
    by_part: Dict[str, float] = defaultdict(float)
    by_op: Dict[str, float] = defaultdict(float)
    for event in prof.events():
        ms = event.self_cpu_time_total / 1e3 / steps
        by_part[_part(event)] += ms
        by_op[f"{event.name} {event.input_shapes}"] += ms
    return {part: by_part.get(part, 0.0) for part in PARTS}, dict(by_op)


def composition_macs(unit: nn.Module) -> int:
    """Multiply-adds one training step spends composing ``unit`` (weights; biases are lower order)."""
    weights, _ = layer_params(unit.layers)
    strategy = getattr(unit.spec, "strategy", "fc")
    if strategy == "ck":
        shapes = [(w.shape[0], w.shape[1], w.shape[2]) for w in weights]
        left_first = products.ck_folds_left_first(weights)
        folds = products.fold_costs(shapes, left_first)
        # forward: every fold; backward: the partials again (all but the last fold), then two GEMMs per fold
        return sum(folds) + sum(folds[:-1]) + 2 * sum(folds)
    groups = 1 if strategy == "fc" else unit.spec.groups
    w1, w2, w3 = weights
    i, a = w1.shape[1], w1.shape[0] // groups
    c, o = w2.shape[0] // groups, w3.shape[0] // groups
    t = w2.shape[2] * w2.shape[3] if w2.dim() == 4 else 1
    forward = min(products.cl_cost(i, a, c, o, t, 1))
    return groups * (forward + products.cl_backward_plan(i, a, c, o, t).cost)


def network_composition_macs(model: nn.Module) -> int:
    return sum(composition_macs(m) for m in model.modules()
               if isinstance(m, (ec.FusedExpandConv2d, ec.FusedExpandLinear)) and not m.nonlinear)


def gemm_rate(device: torch.device, repeats: int = 20) -> float:
    """GFLOP/s of a float32 GEMM shaped like the composition's large ones (median of ``repeats``)."""
    a = torch.randn(12544, 256, device=device)
    b = torch.randn(256, 64, device=device)
    times = []
    for _ in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times = sorted(times[3:])
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / times[len(times) // 2] / 1e9


def report(model_name: str, form: str, rate: float, batch: int, device: torch.device, steps: int = 5,
           backend: str = "auto", top: int = 12) -> dict:
    torch.manual_seed(0)
    compact = Variant(build(model_name, "compact", None, backend), "compact", None, "compact", batch, device)
    fused = Variant(build(model_name, form, rate, backend), form, rate, "fused", batch, device)
    (compact_parts, compact_ops), (fused_parts, fused_ops) = profile_step(compact, steps), profile_step(fused, steps)
    macs = network_composition_macs(fused.model)
    rate_gflops = gemm_rate(device)
    added = sorted(((ms - compact_ops.get(op, 0.0), op) for op, ms in fused_ops.items()), reverse=True)[:top]
    return dict(model=model_name, form=form, rate=rate, batch=batch, device=str(device),
                threads=torch.get_num_threads(), compact=compact_parts, fused=fused_parts,
                composition_gmac=macs / 1e9, gemm_gflops=rate_gflops,
                composition_floor_ms=2 * macs / rate_gflops / 1e6,
                largest_added=[(op, ms) for ms, op in added])


def format_report(r: dict) -> str:
    lines = [f"{r['model']} {r['form']} r={r['rate']:g}, batch {r['batch']} on {r['device']} "
             f"({r['threads']} threads): profiled ms per training step (profiler overhead included)",
             f"{'part':<12} {'compact':>9} {'fused':>9} {'added':>9}"]
    for part in PARTS:
        lines.append(f"{part:<12} {r['compact'][part]:9.2f} {r['fused'][part]:9.2f} "
                     f"{r['fused'][part] - r['compact'][part]:9.2f}")
    total_c, total_f = sum(r["compact"].values()), sum(r["fused"].values())
    lines.append(f"{'total':<12} {total_c:9.2f} {total_f:9.2f} {total_f - total_c:9.2f}")
    lines.append(f"composition floor: {r['composition_gmac']:.3f} GMAC per step at {r['gemm_gflops']:.0f} GFLOP/s "
                 f"(float32 GEMM measured here) = {r['composition_floor_ms']:.2f} ms; measured "
                 f"{r['fused']['composition']:.2f} ms")
    lines.append("largest operators the fused step adds (ms per step):")
    lines += [f"  {ms:7.2f}  {op[:110]}" for op, ms in r["largest_added"]]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smallnet7")
    parser.add_argument("--form", default="cl")
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="largest added operators to list")
    args = parser.parse_args(argv)
    if torch.device(args.device).type != "cpu":
        parser.error("step_profile attributes CPU time; on a GPU, time with python -m bench.run (device events)")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(format_report(report(args.model, args.form, args.rate, args.batch, torch.device(args.device), args.steps,
                               top=args.top)))


if __name__ == "__main__":
    main()
