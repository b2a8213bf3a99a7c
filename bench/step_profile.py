"""Where the time a fused network adds to a training step goes, and the floor that work sets.

    python -m bench.step_profile --form cl --rate 8 --threads 2      # SmallNet k=7, batch 128, CPU

Times the compact and the fused network's training step interleaved (no profiler: the overhead
the fused step adds), then profiles a few steps of each (``torch.profiler``) and gives each
operator's self time to the part of the step that called it: the *composition* (the composers'
Functions forward and backward, and the network composer's call), the *optimizer*
(``optimizer.step``), or the *network* (convolutions, norms, pooling, loss: what the compact step
runs as well). The floor (``bench/roofline.py``): per phase of the added work (composition
forward, composition backward, the optimizer's update of the parameters the expansion adds), the
larger of its multiply-adds at the GEMM rate and its bytes at the copy bandwidth, both measured in
the same run. It prints the added time as a multiple of that floor, and per part where the
profiled time goes beyond it.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from collections import defaultdict
from typing import Dict, Tuple

import torch
from torch import nn

if __package__ in (None, ""):  # `python bench/step_profile.py` as well as `python -m bench.step_profile`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.timing import interleaved  # noqa: E402

from . import roofline  # noqa: E402
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
    """Multiply-adds one training step spends composing ``unit``, forward and backward (weights;
    biases are lower order): ``roofline.unit_work``."""
    return int(sum(w.macs for w in roofline.unit_work(unit).values()))


def network_composition_macs(model: nn.Module) -> int:
    return sum(composition_macs(m) for m in roofline.fused_units(model))


def added_step_ms(compact: Variant, fused: Variant, device: torch.device, rounds: int = 7):
    """Unprofiled step medians of both and their difference, timed interleaved with the roofline's
    rate probes, and the rates from the probes' best samples over the same rounds (a floor wants
    the rate the machine reached, and rounds spread over the whole run rarely all land in a slow
    spell, where the best of back-to-back calls did)."""
    probes = roofline.rate_probes(device)
    timings = interleaved({"compact": compact.step, "fused": fused.step,
                           "rate:gemm": probes["gemm"], "rate:copy": probes["copy"]},
                          device, min_run_time=0.3, rounds=rounds)
    out = {name: timings[name].median * 1e3 for name in ("compact", "fused")}
    out["added"] = out["fused"] - out["compact"]
    return out, roofline.rates_from_seconds(min(timings["rate:gemm"].samples), min(timings["rate:copy"].samples))


def report(model_name: str, form: str, rate: float, batch: int, device: torch.device, steps: int = 5,
           backend: str = "auto", top: int = 12, rounds: int = 7) -> dict:
    torch.manual_seed(0)
    compact = Variant(build(model_name, "compact", None, backend), "compact", None, "compact", batch, device)
    fused = Variant(build(model_name, form, rate, backend), form, rate, "fused", batch, device)
    timed, rates = added_step_ms(compact, fused, device, rounds)
    (compact_parts, compact_ops), (fused_parts, fused_ops) = profile_step(compact, steps), profile_step(fused, steps)
    work = roofline.added_work(fused.model, compact.model)
    floors = roofline.floor_ms(work, rates)
    phases = {phase: dict(gmac=w.macs / 1e9, mb=w.bytes / 1e6, compute_ms=2 * w.macs / rates.gemm_gflops / 1e6,
                          memory_ms=w.bytes / rates.copy_gbps / 1e6, floor_ms=floors[phase])
              for phase, w in work.items()}
    added = sorted(((ms - compact_ops.get(op, 0.0), op) for op, ms in fused_ops.items()), reverse=True)[:top]
    return dict(model=model_name, form=form, rate=rate, batch=batch, device=str(device),
                threads=torch.get_num_threads(), timed=timed, compact=compact_parts, fused=fused_parts,
                gemm_gflops=rates.gemm_gflops, copy_gbps=rates.copy_gbps, phases=phases,
                floor_ms=floors["total"], added_vs_floor=timed["added"] / floors["total"],
                composition_gmac=sum(p["gmac"] for name, p in phases.items() if name != "optimizer"),
                composition_floor_ms=floors["compose_forward"] + floors["compose_backward"],
                largest_added=[(op, ms) for ms, op in added])


def format_report(r: dict) -> str:
    t = r["timed"]
    lines = [f"{r['model']} {r['form']} r={r['rate']:g}, batch {r['batch']} on {r['device']} ({r['threads']} threads)",
             f"step (unprofiled, interleaved medians): compact {t['compact']:.2f} ms, fused {t['fused']:.2f} ms, "
             f"added {t['added']:.2f} ms",
             f"floor of the added work (GEMM {r['gemm_gflops']:.0f} GFLOP/s and copy {r['copy_gbps']:.1f} GB/s, "
             "the best of their probes timed in the same rounds as the steps):",
             f"  {'phase':<17} {'GMAC':>7} {'MB':>7} {'compute':>8} {'memory':>8} {'floor ms':>9}"]
    for phase, p in r["phases"].items():
        lines.append(f"  {phase:<17} {p['gmac']:7.3f} {p['mb']:7.1f} {p['compute_ms']:8.2f} {p['memory_ms']:8.2f} "
                     f"{p['floor_ms']:9.2f}")
    lines.append(f"  {'total':<17} {'':>7} {'':>7} {'':>8} {'':>8} {r['floor_ms']:9.2f}")
    lines.append(f"added time = {r['added_vs_floor']:.2f}x the floor")
    lines.append("where it goes: profiled ms per step (profiler overhead included) by part, beside each part's floor")
    lines.append(f"  {'part':<12} {'compact':>9} {'fused':>9} {'added':>9} {'floor':>9}")
    part_floor = {"composition": r["composition_floor_ms"], "optimizer": r["phases"]["optimizer"]["floor_ms"],
                  "network": 0.0}
    for part in PARTS:
        lines.append(f"  {part:<12} {r['compact'][part]:9.2f} {r['fused'][part]:9.2f} "
                     f"{r['fused'][part] - r['compact'][part]:9.2f} {part_floor[part]:9.2f}")
    total_c, total_f = sum(r["compact"].values()), sum(r["fused"].values())
    lines.append(f"  {'total':<12} {total_c:9.2f} {total_f:9.2f} {total_f - total_c:9.2f} {r['floor_ms']:9.2f}")
    lines.append("largest operators the fused step adds (ms per step, profiled):")
    lines += [f"  {ms:7.2f}  {op[:110]}" for op, ms in r["largest_added"]]
    return "\n".join(lines)


def format_summary(reports) -> str:
    lines = [f"{'form':<7} {'r':>3} {'compact ms':>10} {'fused ms':>9} {'added ms':>9} {'floor ms':>9} {'x floor':>8}"]
    for r in reports:
        t = r["timed"]
        lines.append(f"{r['form']:<7} {r['rate']:>3g} {t['compact']:10.2f} {t['fused']:9.2f} {t['added']:9.2f} "
                     f"{r['floor_ms']:9.2f} {r['added_vs_floor']:8.2f}")
    return "\n".join(lines)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smallnet7")
    parser.add_argument("--form", default="cl", help="one form or several, comma-separated (cl, ck, cl+fc, ...)")
    parser.add_argument("--rate", default="8", help="one rate or several, comma-separated")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the unprofiled timing")
    parser.add_argument("--top", type=int, default=12, help="largest added operators to list")
    parser.add_argument("--json", default=None, help="write the reports (and the environment) here")
    args = parser.parse_args(argv)
    if torch.device(args.device).type != "cpu":
        parser.error("step_profile attributes CPU time; on a GPU, time with python -m bench.run (device events)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reports = []
    for form in [f.strip() for f in args.form.split(",") if f.strip()]:
        for rate in [float(x) for x in args.rate.split(",") if x.strip()]:
            reports.append(report(args.model, form, rate, args.batch, device, args.steps, top=args.top,
                                  rounds=args.rounds))
            print(format_report(reports[-1]) + "\n", flush=True)
    if len(reports) > 1:
        print(format_summary(reports))
    if args.json:
        from .report import environment, write_json
        write_json(pathlib.Path(args.json), {"environment": environment(device, argv if argv is not None else
                                                                      sys.argv[1:], "bench.step_profile"),
                                             "reports": reports})
    return reports


if __name__ == "__main__":
    main()
