"""Where the time a fused network adds to a training step goes, and the floor that work sets.

    python -m bench.step_profile --form cl --rate 8 --threads 2      # SmallNet k=7, batch 128, CPU

Times, round-robin and without the profiler: the compact and the fused network's training steps
(their difference is the added time), the fused network's composition alone (the network
composer's call and the backward of every composed weight from fixed gradients), the same for a
twin whose units have one channel per group (``width_one_twin``: the composition's per-operator
cost without its arithmetic), each network's optimizer step alone, and the two rate probes. So
the added time splits into the composition, the optimizer's extra work and the rest (what the
fused step's autograd graph, allocations and caches cost the network around it; negative where
the composition costs less inside the step than alone), each beside its floor. The floor (``bench/roofline.py``):
per phase of the added work (composition forward, composition backward, the optimizer's update
of the parameters the expansion adds), the larger of its multiply-adds at the GEMM rate and its
bytes at the copy bandwidth, both from the probes of the same rounds.
``--retain-freed-memory`` keeps glibc from unmapping freed blocks (``expandnets_cuda.train.
retain_freed_memory``): in the round-robin, the other models' steps make a large gradient come
back as fresh, page-faulted memory each call, which a loop training one model does not pay.

A profile of a few steps of each network (``torch.profiler``) then gives each operator's self
time to the part of the step that called it (*composition*, *optimizer*, or *network*: what the
compact step runs as well), and splits the composition's operators by kind: GEMMs (with the rate
they reached on the composition's multiply-adds), passes over memory, and per-operator cost
(metadata operators, Python, the autograd engine). Profiled times include the profiler's own
cost; the unprofiled split above is the one to quote.
"""
from __future__ import annotations

import argparse
import copy
import pathlib
import statistics
import sys
from collections import defaultdict
from typing import Callable, Dict

try:
    import resource
except ImportError:  # Windows: page faults are not counted
    resource = None

import torch
from torch import nn

if __package__ in (None, ""):  # `python bench/step_profile.py` as well as `python -m bench.step_profile`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.nn import network  # noqa: E402
from expandnets_cuda.nn.unit import LAST_COMPOSER, unstage  # noqa: E402
from expandnets_cuda.timing import interleaved  # noqa: E402
from expandnets_cuda.train.cpu_memory import WITHOUT_GLIBC, allocator_settings, retain_freed_memory  # noqa: E402

from . import roofline  # noqa: E402
from .network import Variant, build  # noqa: E402

PARTS = ("network", "composition", "optimizer")
# Names of the profiler ranges each part runs under (a match on any enclosing range): every
# composer's autograd Function (``_ComposeCL``, ``_ComposeFC``, ``_ComposeCKNetwork``, ...) and its
# backward node, and the network composer's range and ops.
_COMPOSITION = ("_Compose", "expandnets::")
_OPTIMIZER = ("Optimizer.",)
# The composition's operators by kind (``operator_kind``). GEMM-like: matrix products and the
# convolutions CK's folds run. Metadata: operators that touch no data (their cost is dispatch).
KINDS = ("gemm", "memory", "per-operator")
_GEMM_MARKERS = ("mm", "matmul", "mv", "conv", "dot", "linear")
_METADATA = frozenset(f"aten::{name}" for name in (
    "view", "reshape", "_reshape_alias", "expand", "transpose", "t", "permute", "unsqueeze", "squeeze",
    "select", "slice", "as_strided", "empty", "empty_strided", "detach", "alias", "split", "chunk",
    "unbind", "narrow", "contiguous", "resolve_conj", "resolve_neg", "view_as", "expand_as", "unflatten",
    "flatten", "_unsafe_view", "lift_fresh", "result_type", "is_nonzero", "item", "_local_scalar_dense",
    "to", "empty_like", "new_empty", "clone"))  # to/clone: their copy (if any) is a copy_ of its own


def _part(event) -> str:
    while event is not None:
        if any(marker in event.name for marker in _COMPOSITION):
            return "composition"
        if event.name.startswith(_OPTIMIZER):
            return "optimizer"
        event = event.cpu_parent
    return "network"


def profile_step(variant: Variant, steps: int = 5, warmup: int = 3):
    """Milliseconds per step of ``variant.step`` by part, and the composition's by operator (name
    and input shapes) and by ``KINDS`` (``{kind: {"ms", "ops"}}``, operators per step)."""
    for _ in range(warmup):
        variant.step()
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(steps):
            variant.step()
    by_part: Dict[str, float] = defaultdict(float)
    by_op: Dict[str, float] = defaultdict(float)
    by_kind = {kind: {"ms": 0.0, "ops": 0.0} for kind in KINDS}
    for event in prof.events():
        ms = event.self_cpu_time_total / 1e3 / steps
        part = _part(event)
        by_part[part] += ms
        if part == "composition":
            by_op[f"{event.name} {event.input_shapes}"] += ms
            kind = by_kind[operator_kind(event.name)]
            kind["ms"] += ms
            kind["ops"] += 1 / steps
    return {part: by_part.get(part, 0.0) for part in PARTS}, dict(by_op), by_kind


def operator_kind(name: str) -> str:
    """``"gemm"``, ``"memory"`` (an ATen operator that reads or writes data) or ``"per-operator"``
    (metadata operators, Python Functions' own time, the autograd engine's bookkeeping)."""
    if not name.startswith("aten::"):
        return "per-operator"
    if name in _METADATA:
        return "per-operator"
    if any(marker in name[len("aten::"):] for marker in _GEMM_MARKERS):
        return "gemm"
    return "memory"


def composition_call(model: nn.Module) -> Callable[[], None]:
    """One step's composition alone: the network composer's call, then the backward of every
    composed weight and bias from fixed random gradients (what the loss would send them), the
    gradients dropped after. Call it after a training step (the composer groups the units that
    have run)."""
    composer = model.__dict__.get("_network_composer")
    if composer is None:
        raise ValueError("model has no network composer: build it with expandnets_cuda.expand_model")

    def composed():
        composer.compose()
        staged = [unstage(unit) for unit in composer.units]
        return [t for found in staged if found is not None for t in found[1] if t is not None]

    cotangents = [torch.randn_like(t) for t in composed()]
    params = [p for unit in composer.units for p in unit.parameters()]

    def call():
        torch.autograd.backward(composed(), cotangents)
        for p in params:
            p.grad = None

    return call


def width_one_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose fused units keep their kernels, groups and biases but have one
    channel per group in every sub-layer: its composition runs (nearly) the same operators on
    tensors too small to cost arithmetic, so its time is the composition's per-operator cost
    (Python, dispatch, the autograd engine). Plans that depend on sizes may pick other products.

    The twin composes its units in the calls ``model``'s network composer makes (``_same_calls``):
    at one channel every unit has the same shapes, so the twin's own composer would batch them all
    into one call and count the per-operator cost of one unit instead of every unit's."""
    twin = copy.deepcopy(model)
    for unit in roofline.fused_units(twin):
        for layer in unit.layers:
            groups = getattr(layer, "groups", 1)
            shape = (groups, 1, *layer.weight.shape[2:])
            layer.weight = nn.Parameter(torch.randn(shape, dtype=layer.weight.dtype, device=layer.weight.device))
            if layer.bias is not None:
                layer.bias = nn.Parameter(torch.randn(groups, dtype=layer.bias.dtype, device=layer.bias.device))
    _same_calls(model, twin)
    return twin


def _same_calls(model: nn.Module, twin: nn.Module) -> None:
    """Make ``twin``'s network composer group its units as ``model``'s groups the matching units
    (``NetworkComposition.groups``, by position): the same composition calls, one per group."""
    ours, theirs = model.__dict__.get("_network_composer"), twin.__dict__.get("_network_composer")
    if ours is None or theirs is None:
        return
    position = {id(unit): k for k, unit in enumerate(ours.units)}
    calls = []
    for composer, units in ours.groups().values():
        members = [position[id(unit)] for unit in units]
        # Tiny units always batch on a CPU; large ones of equal shapes there compose one by one.
        calls += [members] if network._composes_in_one_call(units, composer) else [[k] for k in members]
    twin_units = theirs.units

    def groups():
        found = {}
        for n, members in enumerate(calls):
            units = [twin_units[k] for k in members]
            composer = units[0].__dict__.get(LAST_COMPOSER)
            if composer is not None:
                found[n] = (composer, units)
        return found

    theirs.groups = groups  # an instance attribute: this twin only


def optimizer_call(variant: Variant) -> Callable[[], object]:
    """``variant``'s optimizer step alone, on copies of its parameters with random gradients (the
    same optimizer and settings; the model itself is left untouched)."""
    params = [p.detach().clone() for p in variant.model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    return type(variant.optimizer)(params, **variant.optimizer.defaults).step


def composition_macs(unit: nn.Module) -> int:
    """Multiply-adds one training step spends composing ``unit``, forward and backward (weights;
    biases are lower order): ``roofline.unit_work``."""
    return int(sum(w.macs for w in roofline.unit_work(unit).values()))


def network_composition_macs(model: nn.Module) -> int:
    return sum(composition_macs(m) for m in roofline.fused_units(model))


def added_step_ms(compact: Variant, fused: Variant, device: torch.device, rounds: int = 7):
    """Unprofiled medians, timed round-robin with the roofline's rate probes: both steps and their
    per-round difference (``added``), the fused network's composition alone (``composition``), the
    per-round difference of the two optimizer steps alone (``optimizer``), and ``rest`` = added -
    composition - optimizer. Also the rates from the probes' best samples over the same rounds (a floor wants
    the rate the machine reached, and rounds spread over the whole run rarely all land in a slow
    spell, where the best of back-to-back calls did), and the page faults per call of the steps and
    the composition in those rounds."""
    probes = roofline.rate_probes(device)
    fused.step()  # the composer groups units that have run
    counted = {"compact step": FaultCounted(compact.step), "fused step": FaultCounted(fused.step),
               "composition alone": FaultCounted(composition_call(fused.model))}
    timings = interleaved({"compact": counted["compact step"], "fused": counted["fused step"],
                           "composition": counted["composition alone"],
                           "composition:width 1": composition_call(width_one_twin(fused.model)),
                           "optimizer:compact": optimizer_call(compact), "optimizer:fused": optimizer_call(fused),
                           "rate:gemm": probes["gemm"], "rate:copy": probes["copy"]},
                          device, min_run_time=0.3, rounds=rounds)
    out = {name: timings[name].median * 1e3 for name in ("compact", "fused", "composition")}
    out["composition_per_operator"] = timings["composition:width 1"].median * 1e3
    out["added"] = _paired_difference_ms(timings["fused"], timings["compact"])
    out["optimizer"] = _paired_difference_ms(timings["optimizer:fused"], timings["optimizer:compact"])
    out["rest"] = out["added"] - out["composition"] - out["optimizer"]
    rates = roofline.rates_from_seconds(min(timings["rate:gemm"].samples), min(timings["rate:copy"].samples))
    return out, rates, {name: c.per_call for name, c in counted.items()}


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


class FaultCounted:
    """``fn`` that counts the page faults served without I/O (fresh memory touched) over its calls;
    counted inside the round-robin, where each call follows another workload's."""

    def __init__(self, fn: Callable[[], object]):
        self.fn, self.faults, self.calls = fn, 0, 0

    def __call__(self):
        before = _minor_faults()
        out = self.fn()
        self.faults += _minor_faults() - before
        self.calls += 1
        return out

    @property
    def per_call(self) -> float:
        return self.faults / max(self.calls, 1)


def _paired_difference_ms(a, b) -> float:
    """The median over rounds of ``a``'s sample minus ``b``'s of the same round (ms): steadier than
    a difference of medians when the machine's speed drifts between rounds."""
    return statistics.median(x - y for x, y in zip(a.samples, b.samples)) * 1e3


def report(model_name: str, form: str, rate: float, batch: int, device: torch.device, steps: int = 5,
           backend: str = "auto", top: int = 12, rounds: int = 7) -> dict:
    torch.manual_seed(0)
    compact = Variant(build(model_name, "compact", None, backend), "compact", None, "compact", batch, device)
    fused = Variant(build(model_name, form, rate, backend), form, rate, "fused", batch, device)
    timed, rates, faults = added_step_ms(compact, fused, device, rounds)
    (compact_parts, _, _), (fused_parts, fused_ops, kinds) = profile_step(compact, steps), profile_step(fused, steps)
    work = roofline.added_work(fused.model, compact.model)
    floors = roofline.floor_ms(work, rates)
    phases = {phase: dict(gmac=w.macs / 1e9, mb=w.bytes / 1e6, compute_ms=2 * w.macs / rates.gemm_gflops / 1e6,
                          memory_ms=w.bytes / rates.copy_gbps / 1e6, floor_ms=floors[phase])
              for phase, w in work.items()}
    composition_gmac = sum(p["gmac"] for name, p in phases.items() if name != "optimizer")
    if kinds["gemm"]["ms"] > 0:
        kinds["gemm"]["gflops"] = 2 * composition_gmac / kinds["gemm"]["ms"] * 1e3
    composition_ops = sorted(((ms, op) for op, ms in fused_ops.items()), reverse=True)[:top]
    return dict(model=model_name, form=form, rate=rate, batch=batch, device=str(device),
                threads=torch.get_num_threads(), allocator=allocator_settings(), timed=timed,
                compact=compact_parts, fused=fused_parts,
                gemm_gflops=rates.gemm_gflops, copy_gbps=rates.copy_gbps, phases=phases,
                floor_ms=floors["total"], added_vs_floor=timed["added"] / floors["total"],
                composition_gmac=composition_gmac,
                composition_floor_ms=floors["compose_forward"] + floors["compose_backward"],
                composition_kinds=kinds, minor_faults=faults,
                largest_composition_ops=[(op, ms) for ms, op in composition_ops])


def format_report(r: dict) -> str:
    t = r["timed"]
    retained = (r.get("allocator") or {}).get("retain_freed_memory")
    lines = [f"{r['model']} {r['form']} r={r['rate']:g}, batch {r['batch']} on {r['device']} ({r['threads']} threads"
             + (", freed memory retained" if retained else "") + ")",
             f"step (unprofiled, interleaved medians): compact {t['compact']:.2f} ms, fused {t['fused']:.2f} ms; "
             f"added (the median of the per-round differences) {t['added']:.2f} ms",
             f"floor of the added work (GEMM {r['gemm_gflops']:.0f} GFLOP/s and copy {r['copy_gbps']:.1f} GB/s, "
             "the best of their probes timed in the same rounds as the steps):",
             f"  {'phase':<17} {'GMAC':>7} {'MB':>7} {'compute':>8} {'memory':>8} {'floor ms':>9}"]
    for phase, p in r["phases"].items():
        lines.append(f"  {phase:<17} {p['gmac']:7.3f} {p['mb']:7.1f} {p['compute_ms']:8.2f} {p['memory_ms']:8.2f} "
                     f"{p['floor_ms']:9.2f}")
    lines.append(f"  {'total':<17} {'':>7} {'':>7} {'':>8} {'':>8} {r['floor_ms']:9.2f}")
    lines.append(f"added time = {r['added_vs_floor']:.2f}x the floor")
    lines.append("where it goes (unprofiled, timed alone in the same rounds), beside each part's floor:")
    lines.append(f"  {'part':<43} {'ms':>7} {'floor':>7} {'x floor':>8}")
    part_floor = {"composition": r["composition_floor_ms"], "optimizer": r["phases"]["optimizer"]["floor_ms"]}
    for part, label in (("composition", "composition alone, forward + backward"),
                        ("composition_per_operator", "  of which per-operator (units at width 1)"),
                        ("optimizer", "optimizer step, fused - compact"),
                        ("rest", "the rest (the network around them)")):
        floor = part_floor.get(part, 0.0)
        ratio = f"{t[part] / floor:8.2f}" if floor > 0 else f"{'':>8}"
        lines.append(f"  {label:<43} {t[part]:7.2f} {floor:7.2f} {ratio}")
    lines.append("page faults per call in those rounds (fresh memory touched): "
                 + ", ".join(f"{name} {n:.0f}" for name, n in r["minor_faults"].items()))
    lines.append("the composition's operators by kind (profiled; profiler overhead included):")
    lines.append(f"  {'kind':<14} {'ops/step':>9} {'ms':>7}")
    for kind, k in r["composition_kinds"].items():
        rate = f"  ({k['gflops']:.0f} GFLOP/s on the composition's multiply-adds)" if "gflops" in k else ""
        lines.append(f"  {kind:<14} {k['ops']:9.0f} {k['ms']:7.2f}{rate}")
    lines.append(f"profiled ms per step by part: compact {_parts_text(r['compact'])}; fused {_parts_text(r['fused'])}")
    lines.append("largest composition operators (ms per step, profiled):")
    lines += [f"  {ms:7.2f}  {op[:110]}" for op, ms in r["largest_composition_ops"]]
    return "\n".join(lines)


def _parts_text(parts: Dict[str, float]) -> str:
    return ", ".join(f"{part} {ms:.2f}" for part, ms in parts.items())


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
    parser.add_argument("--top", type=int, default=12, help="largest composition operators to list")
    parser.add_argument("--json", default=None, help="write the reports (and the environment) here")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="keep glibc from unmapping freed blocks (expandnets_cuda.train.retain_freed_memory)")
    args = parser.parse_args(argv)
    if torch.device(args.device).type != "cpu":
        parser.error("step_profile attributes CPU time; on a GPU, time with python -m bench.run (device events)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.retain_freed_memory and not retain_freed_memory():
        parser.error(f"--retain-freed-memory {WITHOUT_GLIBC}")
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
