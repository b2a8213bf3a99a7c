"""Benchmark fused ExpandNets against the compact network and the unfused chain.

    python -m bench.run                      # quick set (CPU default, a few minutes)
    python -m bench.run --full               # the full set (GPU default): all layers, batch 128
    python -m bench.run --device cuda --rates 4 --models smallnet7 --backends torch,auto

Prints the tables, writes a JSON record (figures + device, versions, command, date) and a PNG of
the training-step slowdown vs r. GPU runs go to bench/results/ (commit them); CPU runs to
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

from . import report  # noqa: E402
from .cases import MODELS, layer_cases  # noqa: E402
from .layers import bench_layer  # noqa: E402
from .network import FORMS, bench_network  # noqa: E402

QUICK = dict(layer_batch=8, network_batch=32, min_run_time=0.05, mobilenet_layers=3,
             network_models=("smallnet7",), network_forms=("compact", "cl", "ck", "cl+fc"))
FULL = dict(layer_batch=128, network_batch=128, min_run_time=0.2, mobilenet_layers=None,
            network_models=("smallnet7", "mobilenet_v2"), network_forms=("compact", "cl", "ck", "cl+fc", "ck+fc"))


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
    p.add_argument("--strategies", default="cl,ck")
    p.add_argument("--rates", default="2,4,8")
    p.add_argument("--backends", default=None, help="fused backends to measure (default: every available one + auto)")
    p.add_argument("--layer-batch", type=int, default=None)
    p.add_argument("--network-batch", type=int, default=None)
    p.add_argument("--min-run-time", type=float, default=None, help="seconds per CPU timing")
    p.add_argument("--skip-layers", action="store_true")
    p.add_argument("--skip-network", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSON path (the PNG goes beside it)")
    p.add_argument("--no-progress", action="store_true")
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
    folder = report.REPO / "bench" / "results" / ("" if on_gpu else "local")
    return folder / f"{report.slug(device_name)}-{datetime.date.today().isoformat()}-bench.json"


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    full = args.full or (device.type == "cuda" and not args.quick)
    cfg, mode = dict(FULL if full else QUICK), ("full" if full else "quick")
    for key in ("layer_batch", "network_batch", "min_run_time"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    rates = [float(r) for r in _csv(args.rates)]
    strategies = _csv(args.strategies)
    available = [pair.name for pair in ec.backends.candidate_pairs(device)]  # the fused pairs that run here
    backends = _csv(args.backends) if args.backends else available + ["auto"]
    env = report.environment(device)
    print(f"expandnets_cuda benchmark ({mode}) on {env['device']}, torch {env['torch']}, triton {env['triton']}; "
          f"fused backends {backends}")

    cases = []
    for model in _csv(args.models):
        if model not in MODELS:
            raise SystemExit(f"--models: unknown model {model!r}; choose from {list(MODELS)}")
        found = layer_cases(model)
        if model == "mobilenet_v2" and cfg["mobilenet_layers"]:
            found = found[:cfg["mobilenet_layers"]]
        cases += [(case, s, r) for case in found for s in case.strategies(strategies) for r in rates]
    network_models = _csv(args.network_models) if args.network_models else list(cfg["network_models"])
    forms = _csv(args.forms) if args.forms else list(cfg["network_forms"])
    nets = [(m, "compact", None, False) for m in network_models]
    nets += [(m, f, r, fused) for m in network_models for f in forms if f != "compact"
             if not (m == "mobilenet_v2" and "ck" in f) for r in rates for fused in (False, True)]
    progress = _progress((0 if args.skip_layers else len(cases)) + (0 if args.skip_network else len(nets)),
                         args.no_progress)

    layer_rows: List[dict] = []
    if not args.skip_layers:
        for case, strategy, rate in cases:
            progress.set_description(f"{case.label} {strategy} r={rate:g}")
            layer_rows += bench_layer(case, strategy, rate, backends, cfg["layer_batch"], device,
                                      torch.float32, cfg["min_run_time"])
            progress.update()
    network_rows: List[dict] = []
    if not args.skip_network:
        for model, form, rate, fused in nets:
            progress.set_description(f"{model} {form} r={rate} {'fused' if fused else 'unfused'}")
            network_rows.append(bench_network(model, form, rate, fused, cfg["network_batch"], device,
                                              cfg["min_run_time"]))
            progress.update()
        network_rows = report.network_ratios(network_rows)
    progress.close()

    if layer_rows:
        print(f"\nLayers (batch {cfg['layer_batch']}; times are medians; 'x compact' and 'vs unfused' use fwd+bwd):")
        print(report.format_layer_rows(layer_rows))
    if network_rows:
        print(f"\nNetworks (training step: forward, backward, SGD; batch {cfg['network_batch']}); "
              "'paper@r4' = the paper's unfused ExpandNet / compact training throughput (Table S10, V100s):")
        print(report.format_network_rows(network_rows))
    out = pathlib.Path(args.out) if args.out else default_out(env["device"], device.type == "cuda")
    record = {"environment": env, "mode": mode, "config": {**cfg, "rates": rates, "strategies": strategies,
                                                           "backends": backends},
              "layers": layer_rows, "networks": network_rows}
    report.write_json(out, record)
    plot = report.plot_slowdown(network_rows, out.with_suffix(".png"),
                                f"Training step slowdown vs compact - {env['device']} - {env['date'][:10]}")
    print(f"\nwrote {out}" + (f" and {plot}" if plot else ""))
    return record


if __name__ == "__main__":
    main()
