"""INT8 after contraction, measured: SmallNet k=3 trained on the digits compact and as ExpandNets,
each exported (the ExpandNets contracted), quantized by onnxruntime (static, per channel and per
tensor), and the test accuracy of float vs INT8 side by side, with how hard each network's
weights are to quantize (``expandnets_cuda.deploy.quantize.weight_ranges``).

    python -m bench.int8                          # compact, CL, CL+FC at r=4; 30 epochs each (~3 min on 2 cores)
    python -m bench.int8 --forms compact,cl --epochs 10 --seeds 0,1
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
from typing import List

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.deploy import export as ex  # noqa: E402
from expandnets_cuda.deploy.quantize import quantize_onnx, weight_ranges  # noqa: E402
from expandnets_cuda.train.data import load_dataset  # noqa: E402
from expandnets_cuda.train.pipeline import run  # noqa: E402

from . import report  # noqa: E402


def measure(form: str, rate: float, epochs: int, seed: int, data, work: pathlib.Path) -> dict:
    out = work / f"{form}-{seed}"
    result = run(model="smallnet3", form=form, rate=rate, epochs=epochs, dataset="digits", seed=seed,
                 out_dir=str(out), progress=False, verbose=False, backend="torch")
    exported = ex.export_run(str(out), str(out / "export"), limit=10_000)
    test, labels, calibration = data.test.images.float(), data.test.labels, data.train.images[:512].float()
    accuracy = {"float": exported.extra["accuracy"]["onnx"]}
    for granularity, per_channel in (("int8_per_channel", True), ("int8_per_tensor", False)):
        path = quantize_onnx(exported.files["onnx"], calibration, str(out / f"{granularity}.onnx"),
                             per_channel=per_channel)
        accuracy[granularity] = ex.accuracy(ex.run_onnx(path, test), labels)
    ranges = weight_ranges(result.compact_model)
    return {"form": form, "rate": rate if form != "compact" else None, "seed": seed, "epochs": epochs,
            "accuracy": accuracy, "weight_ranges": ranges,
            "peak_over_std_median": statistics.median(r["channel_peak_over_std_median"] for r in ranges),
            "tensor_peak_over_median_channel": statistics.median(r["tensor_peak_over_median_channel_peak"]
                                                                 for r in ranges)}


def main(argv=None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--forms", default="compact,cl,cl+fc")
    p.add_argument("--rate", type=float, default=4)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    env = report.environment(torch.device("cpu"), sys.argv[1:] if argv is None else list(argv), "bench.int8")
    rows, data = [], load_dataset("digits")
    with tempfile.TemporaryDirectory() as work:
        for form in args.forms.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(measure(form, args.rate, args.epochs, seed, data, pathlib.Path(work)))
                r = rows[-1]
                print(f"{form:<8} seed {seed}: float {100 * r['accuracy']['float']:.2f}%  "
                      f"int8 per channel {100 * r['accuracy']['int8_per_channel']:.2f}%  "
                      f"per tensor {100 * r['accuracy']['int8_per_tensor']:.2f}%  "
                      f"| weights: channel max/std {r['peak_over_std_median']:.2f}, "
                      f"tensor max / median channel max {r['tensor_peak_over_median_channel']:.2f} (medians over layers)")
    out = pathlib.Path(args.out) if args.out else report.REPO / "bench" / "results" / "local" / \
        f"cpu-{env['date'][:10]}-int8.json"
    report.write_json(out, {"environment": env, "rows": rows})
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
