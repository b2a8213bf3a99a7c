"""Epoch-time evidence for training: SmallNet k=7 on the embedded digits, compact vs ExpandNet-CK
(and -CL) unfused vs fused, through the real training pipeline (SGD, augmentation, evaluation).

    python -m bench.train_epochs --device cuda --epochs 3
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.timing import Timing  # noqa: E402
from expandnets_cuda.train import TrainConfig, run  # noqa: E402

from . import report  # noqa: E402

# (label, form, backend): "reference" runs the unfused chain, "auto" the fused unit.
RUNS = (("compact", "compact", "auto"), ("CK unfused", "ck", "reference"), ("CK fused", "ck", "auto"),
        ("CL unfused", "cl", "reference"), ("CL fused", "cl", "auto"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rate", type=float, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=None, help="first N training images (smoke runs)")
    p.add_argument("--repeats", type=int, default=2, help="round-robin repeats of the whole set of runs")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    env = report.environment(torch.device(args.device), sys.argv[1:] if argv is None else list(argv),
                             "bench.train_epochs")
    epoch_times = {label: [] for label, _, _ in RUNS}
    accuracy = {}
    with tempfile.TemporaryDirectory() as scratch:
        # Round-robin over the runs, --repeats times: a slow spell of the machine hits every run.
        for repeat in range(args.repeats):
            for label, form, backend in RUNS:
                config = TrainConfig(model="smallnet7", form=form, rate=args.rate, dataset="digits",
                                     epochs=args.epochs, batch_size=args.batch, backend=backend, device=args.device,
                                     progress=False, verbose=False, train_limit=args.train_limit,
                                     test_limit=args.train_limit,
                                     out_dir=str(pathlib.Path(scratch) / f"{label.replace(' ', '_')}-{repeat}"))
                result = run(config)
                times = [m.time_s for m in result.history]
                # The first epoch carries warm-up (kernel compilation, auto's measurements): kept apart.
                epoch_times[label].append(times)
                accuracy[label] = result.history[-1].test_acc
    rows = []
    for label, form, backend in RUNS:
        steady = [t for times in epoch_times[label] for t in (times[1:] or times)]
        timing = Timing(samples=steady, threads=torch.get_num_threads())
        rows.append({"run": label, "form": form, "backend": backend, "rate": args.rate,
                     "epoch_s": epoch_times[label], "median_epoch_s": timing.median, "spread": timing.spread,
                     "test_acc": accuracy[label]})
        print(f"{label:<11} median epoch {timing.median:.2f} s (spread {100 * timing.spread:.0f}%"
              f"{', noisy' if timing.noisy else ''})  test acc {100 * accuracy[label]:.2f}%")
    base = rows[0]["median_epoch_s"]
    for row in rows:
        row["vs_compact"] = row["median_epoch_s"] / base
    if report.PAPER_TABLES.exists():
        table = json.loads(report.PAPER_TABLES.read_text())["table1_smallnet_k7_cifar10"]
        rate = f"{args.rate:g}"
        print(f"paper (Table 1: SmallNet k=7 CIFAR-10 epoch, unfused, 2x V100): compact {table['compact']['epoch_s']} s, "
              f"CK r={rate} {table['CK'].get(rate, {}).get('epoch_s')} s, CL r={rate} {table['CL'].get(rate, {}).get('epoch_s')} s")
    out = pathlib.Path(args.out) if args.out else report.REPO / "bench" / "results" / (
        "" if args.device == "cuda" else "local") / f"{report.slug(env['device'])}-{env['date'][:10]}-train-epochs.json"
    report.write_json(out, {"environment": env, "epochs": args.epochs, "batch": args.batch, "rows": rows})
    print(f"wrote {out}")
    return {"environment": env, "rows": rows}


if __name__ == "__main__":
    main()
