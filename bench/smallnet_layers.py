"""Per-layer fwd+bwd time of SmallNet k=7 (CIFAR) at rate r: compact conv vs unfused chain vs fused unit.

The main job until the full benchmark suite lands: it shows, on any machine, that the fused
unit costs about what the compact layer costs while the unfused chain costs r^2 more.

    python bench/smallnet_layers.py                 # CPU, batch 32, r=4, CL and CK
    python bench/smallnet_layers.py --device cuda --batch 128 --json out.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import sys

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import expandnets_cuda as ec  # noqa: E402

# SmallNet k=7: (in, out, spatial size of the layer's input)
LAYERS = ((3, 8, 32), (8, 16, 16), (16, 32, 8), (32, 64, 4))
# DESIGN.md section 3: measured CPU yardstick (2 threads, batch 32, r=4, the four conv layers).
YARDSTICK_MS = {"compact": 19.8, "cl_unfused": 260.0, "cl_composed": 48.6, "ck_unfused": 122.0, "ck_composed": 43.0}


def time_fwd_bwd(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median seconds of one forward + backward (input and parameter gradients)."""
    x = x.detach().requires_grad_(True)
    grad = torch.randn_like(module(x))

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)

    if x.device.type == "cuda":
        import triton.testing  # device events, warm-up, median
        return triton.testing.do_bench(step, return_mode="median") / 1e3
    from torch.utils import benchmark
    timer = benchmark.Timer(stmt="step()", globals={"step": step})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def run(device: str, batch: int, rate: float, strategies, min_run_time: float, backend: str):
    rows = []
    for strategy in strategies:
        for index, (cin, cout, size) in enumerate(LAYERS):
            torch.manual_seed(index)
            compact = nn.Conv2d(cin, cout, 7, padding=3).to(device)
            unfused = ec.FusedExpandConv2d(cin, cout, 7, padding=3, strategy=strategy, rate=rate,
                                           backend="reference", device=device)
            fused = ec.FusedExpandConv2d(cin, cout, 7, padding=3, strategy=strategy, rate=rate,
                                         backend=backend, device=device)
            fused.load_state_dict(unfused.state_dict())
            x = torch.randn(batch, cin, size, size, device=device)
            times = {name: time_fwd_bwd(m, x, min_run_time)
                     for name, m in (("compact", compact), ("unfused", unfused), ("fused", fused))}
            rows.append({"strategy": strategy, "layer": index + 1, "in": cin, "out": cout, "size": size,
                         **{f"{k}_ms": v * 1e3 for k, v in times.items()},
                         "fused_vs_compact": times["fused"] / times["compact"],
                         "speedup_vs_unfused": times["unfused"] / times["fused"]})
            r = rows[-1]
            print(f"{strategy.upper():>3} conv{r['layer']} {cin:>2}->{cout:<2} {size:>2}x{size:<2} | "
                  f"compact {r['compact_ms']:8.3f} ms | unfused {r['unfused_ms']:8.3f} ms | "
                  f"fused {r['fused_ms']:8.3f} ms | fused/compact {r['fused_vs_compact']:5.2f}x | "
                  f"unfused/fused {r['speedup_vs_unfused']:5.2f}x", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rate", type=float, default=4)
    parser.add_argument("--strategies", default="cl,ck")
    parser.add_argument("--backend", default="torch", help="backend of the fused unit")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the yardstick used 2)")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per CPU measurement")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    print(f"SmallNet k=7 layers, batch {args.batch}, r={args.rate:g}, device {args.device}, "
          f"fused backend {args.backend!r}, torch {torch.__version__}, fwd+bwd medians")
    rows = run(args.device, args.batch, args.rate, strategies, args.min_run_time, args.backend)
    print("\nWhole conv stack (sum of the four layers):")
    totals = {}
    for strategy in strategies:
        sel = [r for r in rows if r["strategy"] == strategy]
        t = {k: sum(r[f"{k}_ms"] for r in sel) for k in ("compact", "unfused", "fused")}
        totals[strategy] = t
        line = (f"  {strategy.upper()}: compact {t['compact']:.2f} ms, unfused {t['unfused']:.2f} ms, "
                f"fused {t['fused']:.2f} ms -> fused/compact {t['fused'] / t['compact']:.2f}x, "
                f"unfused/fused {t['unfused'] / t['fused']:.2f}x")
        if args.device == "cpu" and args.batch == 32 and args.rate == 4:
            y = YARDSTICK_MS
            line += (f"  [DESIGN.md yardstick: compact {y['compact']}, unfused {y[strategy + '_unfused']}, "
                     f"composed {y[strategy + '_composed']} ms]")
        print(line)
    print("  Paper, Table S10 (GPU, r=4, unfused training, whole net): SmallNet CL 0.44x, CK 0.51x of compact speed.")
    if args.json:
        record = {"command": " ".join(sys.argv), "date": datetime.datetime.now().isoformat(timespec="seconds"),
                  "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
                  "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "batch": args.batch, "rate": args.rate, "rows": rows,
                  "totals_ms": totals}
        pathlib.Path(args.json).write_text(json.dumps(record, indent=2))
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
