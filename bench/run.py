"""Benchmark fused ExpandNets against the compact network and the unfused chain.

    python -m bench.run                      # quick set (CPU default, a few minutes)
    python -m bench.run --full               # the full set (GPU default): all layers, batch 128
    python -m bench.run --device cuda --rates 4 --models smallnet7 --backends torch,auto

Prints the tables, writes a JSON record (figures + device, versions, command, date) and a PNG of
the training-step slowdown vs r (and of the scaling section: the slowdown vs batch and image size).
GPU runs go to bench/results/ (commit them); CPU runs to
bench/results/local/ (ignored by git) unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import datetime
import pathlib
import sys
from typing import List

import torch

if __package__ in (None, ""):  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

import expandnets_cuda as ec  # noqa: E402
from expandnets_cuda.train.cpu_memory import WITHOUT_GLIBC, retain_freed_memory  # noqa: E402

from . import plan as bplan  # noqa: E402
from . import report  # noqa: E402
from .cases import MODELS, layer_cases  # noqa: E402
from .layers import bench_layer  # noqa: E402
from .network import FORMS, bench_networks, form_strategies  # noqa: E402
from .nonlinear import bench_nonlinear_layer, chain_backends_on  # noqa: E402
from .peers import COMPILED_PEERS, PEERS  # noqa: E402
from . import scaling  # noqa: E402

QUICK = dict(layer_batch=8, network_batch=128, min_run_time=0.3, rounds=5, mobilenet_layers=3,
             network_models=("smallnet7",), network_forms=("compact", "cl", "ck", "cl+fc"),
             compile_rates=(4.0,), layer_peers=("collapse",),
             scaling_points="quick", scaling_min_run_time=0.2, scaling_rounds=3)
FULL = dict(layer_batch=128, network_batch=128, min_run_time=0.5, rounds=7, mobilenet_layers=None,
            network_models=("smallnet7", "mobilenet_v2"), network_forms=("compact", "cl", "ck", "cl+fc", "ck+fc"),
            compile_rates=None, layer_peers=("collapse",),
            scaling_points="full", scaling_min_run_time=0.5, scaling_rounds=7)


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small batch, fewer layers (CPU default)")
    mode.add_argument("--full", action="store_true", help="every layer, batch 128 (GPU default)")
    p.add_argument("--models", default=",".join(MODELS), help=f"layer-benchmark models, from {list(MODELS)}")
    p.add_argument("--network-models", default=None, help="network-benchmark models (default per mode)")
    p.add_argument("--forms", default=None, help=f"network forms, from {FORMS} (default per mode)")
    p.add_argument("--strategies", default="cl,ck", help="conv strategies, for layers and network forms")
    p.add_argument("--rates", default="2,4,8")
    p.add_argument("--backends", default=None, help="fused backends to measure (default: every available one + auto)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"network peers, from {list(PEERS)} ('' for none)")
    p.add_argument("--fused-compile", action="store_true",
                   help="also time torch.compile of the fused model wherever a compiled peer runs (compiled "
                        "against compiled; off by default: its cold compiles take minutes each on a CPU)")
    p.add_argument("--compile-rates", default=None,
                   help="rates at which the torch.compile peers run (default: 4 in quick mode, all in full)")
    p.add_argument("--layer-peers", default=None, help="layer peers (default: collapse; compile costs a "
                   "compilation per layer case)")
    p.add_argument("--layer-batch", type=int, default=None)
    p.add_argument("--network-batch", type=int, default=None)
    p.add_argument("--min-run-time", type=float, default=None,
                   help="seconds of timing per variant (the scaling section's too, where given)")
    p.add_argument("--rounds", type=int, default=None,
                   help="round-robin rounds (samples per variant; the scaling section's too, where given)")
    p.add_argument("--skip-layers", action="store_true")
    p.add_argument("--skip-network", action="store_true")
    p.add_argument("--skip-scaling", action="store_true",
                   help="skip the scaling section (fused vs compact as batch and image size grow)")
    p.add_argument("--scaling-points", default=None,
                   help="scaling points: quick, full (default per mode) or a comma-separated list of "
                        "model:form:batch:px, e.g. smallnet7:cl:64:32,mobilenet_v1:cl:8:224")
    p.add_argument("--scaling-models", default=None,
                   help=f"only these models' scaling points, from {list(scaling.MODELS)}")
    p.add_argument("--skip-nonlinear", action="store_true",
                   help="skip the nonlinear-counterpart section (chain kernels; CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--retain-freed-memory", action="store_true",
                   help="keep glibc from unmapping freed blocks, for every variant alike "
                        "(expandnets_cuda.train.retain_freed_memory; the JSON records it)")
    p.add_argument("--out", default=None, help="JSON path (the PNGs go beside it)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verbose", action="store_true",
                   help="also print the layer and nonlinear-chain tables beside the networks' (always in the JSON)")
    p.add_argument("--plan", action="store_true",
                   help="print what would be timed and an estimate of how long it takes, then stop "
                        "(works for --device cuda without a GPU: every backend is assumed built)")
    return p.parse_args(argv)


def _progress(total: int, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or disable:
        class Silent:
            def update(self, n=1): pass
            def set_description(self, text): pass
            def close(self): pass
        return Silent()
    return tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)


def default_out(device_name: str, on_gpu: bool) -> pathlib.Path:
    """bench/results/ (GPU runs, to commit) or bench/results/local/ in a checkout; ./bench_results otherwise."""
    name = f"{report.slug(device_name)}-{datetime.date.today().isoformat()}-bench.json"
    if not report.IN_CHECKOUT:
        return pathlib.Path.cwd() / "bench_results" / name
    return report.REPO / "bench" / "results" / ("" if on_gpu else "local") / name


def fused_compile_rates(args, peers: List[str], compile_rates: List[float]) -> List[float]:
    """Where the compiled fused model runs (``--fused-compile``): at the compile rates, when a
    compiled peer runs at all."""
    if not getattr(args, "fused_compile", False) or not any(p in COMPILED_PEERS for p in peers):
        return []
    return list(compile_rates)


def network_forms(forms: List[str], strategies: List[str]) -> List[str]:
    """The forms whose conv strategies were asked for (``--strategies cl`` runs no CK form)."""
    for form in forms:
        if form not in FORMS:
            raise SystemExit(f"--forms: unknown form {form!r}; choose from {list(FORMS)}")
    return [f for f in forms if form_strategies(f) <= set(strategies)]


def _gpu_backends_assumed() -> List[str]:
    """Every composer+convolver pair the registry knows (torch first), as a GPU with every backend
    built runs them: what ``--plan`` counts for a CUDA device that is not here."""
    names = [n for n in ec.backends.registry.backend_names() if n != ec.backends.registry.REFERENCE]
    pairs = []
    for composer in names:
        for convolver in names:
            name = composer if composer == convolver else f"{composer}+{convolver}"
            try:
                ec.backends.registry.check_backend_name(name)
            except ValueError:
                continue
            pairs.append(name)
    return sorted(pairs, key=lambda n: n != "torch")


def plan(cases, network_models, forms, rates, backends, peers, layer_peers, compile_rates, chain, cfg, args,
         title: str, scaling_points=()) -> bplan.Plan:
    """What ``main`` would time with these settings (bench/plan.py)."""
    out = bplan.Plan(title)
    triton = sum("triton" in b for b in backends)
    if not args.skip_layers:
        layers = out.section("layers")
        for _ in cases:  # compact, unfused, each backend, each peer; fwd, bwd, fwd+bwd each
            layers.add(3 * (2 + len(backends) + len(layer_peers)), cfg["min_run_time"], cfg["rounds"],
                       compiles=3 * sum(p in layer_peers for p in COMPILED_PEERS), triton_shapes=triton, auto_choices=int("auto" in backends))
    if not args.skip_network:
        networks = out.section("networks")
        for model in network_models:
            model_forms = [f for f in forms if f != "compact" and not (model == "mobilenet_v2" and "ck" in f)]
            compiled = (len(model_forms) * sum(r in compile_rates for r in rates)
                        * (sum(p in peers for p in COMPILED_PEERS) + bool(fused_compile_rates(args, peers, compile_rates))))
            others = [p for p in peers if p not in COMPILED_PEERS]
            expandable = len({(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in layer_cases(model)}) + 2
            networks.add(1 + len(model_forms) * len(rates) * (2 + len(others)) + compiled, cfg["min_run_time"],
                         cfg["rounds"], compiles=compiled,  # the fused networks run backend="auto"
                         auto_choices=len(model_forms) * len(rates) * expandable)
    if not args.skip_scaling and scaling_points:
        section = out.section("scaling")
        section.fixed_s += bplan.ROOFLINE_RATES_S
        for point in scaling_points:  # compact, fused, unfused, collapse; auto measures each expanded shape
            section.add(len(scaling.VARIANTS), cfg["scaling_min_run_time"], cfg["scaling_rounds"],
                        auto_choices=scaling.expanded_layers(point))
    if not args.skip_nonlinear and chain:
        nonlinear = out.section("nonlinear")
        for _ in cases:
            nonlinear.add(3 * (1 + len(chain)), cfg["min_run_time"], cfg["rounds"],
                          triton_shapes=sum("triton" in c for c in chain))
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    planning_for_absent_gpu = args.plan and device.type == "cuda" and not torch.cuda.is_available()
    if device.type == "cuda" and not torch.cuda.is_available() and not args.plan:
        raise SystemExit("--device cuda: no CUDA device is available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.retain_freed_memory and not retain_freed_memory():
        raise SystemExit(f"--retain-freed-memory {WITHOUT_GLIBC}")
    full = args.full or (device.type == "cuda" and not args.quick)
    cfg, mode = dict(FULL if full else QUICK), ("full" if full else "quick")
    for key in ("layer_batch", "network_batch", "min_run_time", "rounds"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    for key in ("min_run_time", "rounds"):
        if getattr(args, key) is not None:
            cfg["scaling_" + key] = getattr(args, key)
    if args.scaling_points is not None:
        cfg["scaling_points"] = args.scaling_points
    rates = [float(r) for r in _csv(args.rates)]
    strategies = _csv(args.strategies)
    peers = _csv(args.peers)
    for peer in peers + (_csv(args.layer_peers) if args.layer_peers else []):
        if peer not in PEERS:
            raise SystemExit(f"--peers: unknown peer {peer!r}; choose from {list(PEERS)}")
    layer_peers = _csv(args.layer_peers) if args.layer_peers is not None else list(cfg["layer_peers"])
    compile_rates = ([float(r) for r in _csv(args.compile_rates)] if args.compile_rates is not None
                     else list(cfg["compile_rates"] or rates))
    available = ([pair.name for pair in ec.backends.registry.candidate_pairs(device)]  # the fused pairs that run here
                 if not planning_for_absent_gpu else _gpu_backends_assumed())
    backends = _csv(args.backends) if args.backends else available + ["auto"]
    cases = []
    for model in _csv(args.models):
        if model not in MODELS:
            raise SystemExit(f"--models: unknown model {model!r}; choose from {list(MODELS)}")
        found = layer_cases(model)
        if model == "mobilenet_v2" and cfg["mobilenet_layers"]:
            found = found[:cfg["mobilenet_layers"]]
        cases += [(case, s, r) for case in found for s in case.strategies(strategies) for r in rates]
    network_models = _csv(args.network_models) if args.network_models else list(cfg["network_models"])
    forms = network_forms(_csv(args.forms) if args.forms else list(cfg["network_forms"]), strategies)
    chain = chain_backends_on(device) if not planning_for_absent_gpu else ["triton-chain", "cuda-chain"]
    try:
        scaling_points = scaling.select_points(cfg["scaling_points"], _csv(args.scaling_models)
                                               if args.scaling_models is not None else None, strategies)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"--scaling-points/--scaling-models: {error}")
    if args.plan:
        the_plan = plan(cases, network_models, forms, rates, backends, peers, layer_peers, compile_rates, chain,
                        cfg, args, f"bench.run ({mode}) on {device.type}; backends {backends}; peers {peers}",
                        scaling_points)
        print(the_plan)
        return {"plan": the_plan.as_dict()}
    env = report.environment(device, sys.argv[1:] if argv is None else list(argv))
    print(f"expandnets_cuda benchmark ({mode}) on {env['device']}, torch {env['torch']}, triton {env['triton']}; "
          f"fused backends {backends}; peers {peers}; {cfg['rounds']} interleaved rounds per comparison"
          + ("" if args.skip_scaling else f" ({cfg['scaling_rounds']} in the scaling section)"))
    progress = _progress((0 if args.skip_layers else len(cases)) + (0 if args.skip_network else len(network_models))
                         + (0 if args.skip_scaling else len(scaling_points)), args.no_progress)

    layer_rows: List[dict] = []
    if not args.skip_layers:
        for case, strategy, rate in cases:
            progress.set_description(f"{case.label} {strategy} r={rate:g}")
            layer_rows += bench_layer(case, strategy, rate, backends, cfg["layer_batch"], device,
                                      torch.float32, cfg["min_run_time"], layer_peers, cfg["rounds"])
            progress.update()
    network_rows: List[dict] = []
    if not args.skip_network:
        for model in network_models:
            progress.set_description(f"{model}: {len(forms)} forms x {len(rates)} rates")
            model_forms = [f for f in forms if not (model == "mobilenet_v2" and "ck" in f)]
            network_rows += bench_networks(model, model_forms, rates, cfg["network_batch"], device,
                                           cfg["min_run_time"], cfg["rounds"], peers=peers,
                                           peer_rates={p: compile_rates for p in COMPILED_PEERS},
                                           fused_compile_rates=fused_compile_rates(args, peers, compile_rates))
            progress.update()
        network_rows = report.network_ratios(network_rows)
    scaling_rows: List[dict] = []
    if not args.skip_scaling and scaling_points:
        roofline_rates = scaling.measure_rates(device)  # once per run
        for point in scaling_points:
            progress.set_description(f"scaling {point.label}")
            scaling_rows.append(scaling.bench_point(point, device, cfg["scaling_min_run_time"], cfg["scaling_rounds"],
                                                    roofline_rates))
            progress.update()
    nonlinear_rows: List[dict] = []
    if not args.skip_nonlinear and chain:
        for case, strategy, rate in cases:
            progress.set_description(f"nonlinear {case.label} {strategy} r={rate:g}")
            nonlinear_rows += bench_nonlinear_layer(case, strategy, rate, chain, cfg["layer_batch"], device,
                                                    torch.float32, cfg["min_run_time"], cfg["rounds"])
    progress.close()

    headline = report.headline(network_rows) if network_rows else ""
    grid = report.format_peer_grid(network_rows) if network_rows else ""
    if network_rows:
        print(f"\nHeadline ({env['device']}, training step at batch {cfg['network_batch']}, medians of "
              f"{cfg['rounds']} interleaved rounds):")
        print(headline)
        if grid:
            print("\nFused against the strongest peer, round by round: peer time / fused time, median "
                  "(quartiles) over the rounds, and the verdict (faster or slower: in at least three rounds "
                  "in four; parity: the quartiles straddle 1):")
            print(grid)
    detail = args.verbose or not network_rows  # one table on the screen: the networks', where there are any
    if layer_rows and detail:
        print(f"\nLayers (batch {cfg['layer_batch']}; medians; spread = interquartile range / median, '!' over 10%; "
              "'x compact' and 'vs unfused' use fwd+bwd):")
        print(report.format_layer_rows(layer_rows))
    if nonlinear_rows and detail:
        print(f"\nNonlinear counterpart (+Init; ReLU between sub-layers): unfused chain vs chain kernels "
              f"{chain}, fwd+bwd, batch {cfg['layer_batch']}:")
        print(report.format_nonlinear_rows(nonlinear_rows))
    elif not nonlinear_rows and not args.skip_nonlinear and detail:
        print("\nNonlinear counterpart: skipped, the chain kernels run on CUDA only (on a CPU the Triton "
              "interpreter and the CUDA CPU execution are tests, not something to time).")
    if (layer_rows or nonlinear_rows) and not detail:
        print(f"\n{len(layer_rows)} layer rows and {len(nonlinear_rows)} nonlinear-chain rows: in the JSON below "
              "(--verbose prints their tables)")
    if network_rows:
        print(f"\nNetworks (training step: forward, backward, SGD; batch {cfg['network_batch']}); "
              "'paper@r4' = the paper's unfused ExpandNet / compact training throughput (Table S10, V100s):")
        print(report.format_network_rows(network_rows))
    if scaling_rows:
        print(f"\nScaling (training step of the fused ExpandNet vs the compact network as the work per step grows; "
              f"'fused/c', 'unfused/c', 'collapse/c' = step time / compact's, > 1 slower; 'floor/c' = compact's "
              f"+ the roofline floor of the fused model's added work; medians of {cfg['scaling_rounds']} "
              f"interleaved rounds, {scaling_rows[0]['threads']} threads):")
        print(report.format_scaling_rows(scaling_rows))
    out = pathlib.Path(args.out).resolve() if args.out else default_out(env["device"], device.type == "cuda")
    record = {"environment": env, "mode": mode,
              "config": {**cfg, "rates": rates, "strategies": strategies, "backends": backends, "peers": peers,
                         "layer_peers": layer_peers, "compile_rates": compile_rates, "forms": forms,
                         "scaling": [p.label for p in scaling_points] if not args.skip_scaling else []},
              "headline": headline.splitlines(), "peer_grid": grid.splitlines(),
              "layers": layer_rows, "networks": network_rows, "nonlinear": nonlinear_rows, "scaling": scaling_rows}
    report.write_json(out, record)
    stamp = f"{env['device']} - {env['date'][:10]} - torch {env['torch']}"
    plots = [report.plot_networks(network_rows, out.with_name(out.stem + "-networks.png"),
                                  f"Training step time vs compact - {stamp}"),
             report.plot_layers(layer_rows, out.with_name(out.stem + "-layers.png"),
                                f"Layer fwd+bwd time vs compact conv - {stamp}"),
             report.plot_scaling(scaling_rows, out.with_name(out.stem + "-scaling.png"),
                                 f"Training step time vs compact as the work grows - {stamp}")]
    print(f"\nwrote {out}" + "".join(f" and {plot}" for plot in plots if plot))
    return record


if __name__ == "__main__":
    main()
