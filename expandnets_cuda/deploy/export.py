"""Deploy what an ExpandNet trains for: its contraction, exported and checked.

``export_contracted(model, inputs, out_dir)`` contracts a trained expanded network (exactly:
``contract_model``), writes it as a ``torch.export`` program (``.pt2``) and as ONNX (torch's
dynamo-based exporter; a dynamic batch dimension), then runs both on ``inputs`` and compares them
with the *expanded* network: the ONNX file in onnxruntime on the CPU. It raises
``ExportMismatch`` when an output differs by more than the tolerance, so a file that computes
something else is never left to be deployed silently.

``python -m expandnets_cuda.deploy.export RUN`` (or ``expandnets-export``) does it for a training run of
``expandnets_cuda.train`` (its folder, or its ``model.pt``): the exported graph takes images as the
dataset stores them (0..255, ``(N, C, H, W)``) and normalises them itself with the run's training
statistics; the check uses the run's test images. ``--int8`` adds a statically quantized ONNX
file (``expandnets_cuda.deploy.quantize``) and its accuracy beside the float one's. ``--paper NETWORK``
does it for the paper's ExpandNet of one of the zoo's networks, freshly initialised (a smoke test
of deployment without a trained model).

Needs ``onnx``, ``onnxscript`` and ``onnxruntime`` (``pip install "expandnets_cuda[export]"``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from expandnets_cuda.deploy.agreement import agreement
from expandnets_cuda.deploy.runtime import onnx_session
from expandnets_cuda.convert.model import EXPANDED_TYPES, contract_model

# ||exported - expanded|| / ||expanded|| over all outputs, float32. The expanded network composes
# its weights in float32, the contraction in float64, and onnxruntime orders its sums its own way:
# they agree to ~1e-6, so 1e-4 leaves room for rounding and none for a wrong graph.
REL_TOL = 1e-4
NEEDS = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = 'pip install "expandnets_cuda[export]" (onnx, onnxscript, onnxruntime)'


class ExportMismatch(RuntimeError):
    """An exported model's outputs differ from the expanded network's beyond the tolerance."""


def require_exporters() -> None:
    """Raise ``ImportError`` naming what is missing and how to get it."""
    import importlib.util
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"exporting to ONNX needs {', '.join(missing)}: {INSTALL_HINT}")


class Normalized(nn.Module):
    """``net((x / 255 - mean) / std)``: a network trained on normalised images, taking raw ones."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.float().reshape(1, -1, 1, 1))
        self.register_buffer("std", std.float().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x / 255.0 - self.mean) / self.std)


@dataclass
class Check:
    """How one exported form's outputs compare with the expanded network's on the same inputs."""

    form: str
    rel_error: float
    max_abs_error: float
    differing_predictions: int
    tolerance: float = REL_TOL

    @property
    def ok(self) -> bool:
        return self.rel_error <= self.tolerance

    def __str__(self) -> str:
        return (f"{self.form:<12} relative error {self.rel_error:.2e}  max |diff| {self.max_abs_error:.2e}  "
                f"differing predictions {self.differing_predictions}  "
                + ("OK" if self.ok else f"MISMATCH (tolerance {self.tolerance:g})"))


@dataclass
class ExportReport:
    files: Dict[str, str]
    checks: List[Check]
    inputs: int
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict:
        return {"files": self.files, "inputs": self.inputs, "ok": self.ok,
                "checks": [{**dataclasses.asdict(c), "ok": c.ok} for c in self.checks], **self.extra}

    def __str__(self) -> str:
        lines = [f"checked on {self.inputs} inputs against the expanded network:"]
        lines += [f"  {check}" for check in self.checks]
        lines += [f"  wrote {path}" for path in self.files.values()]
        return "\n".join(lines)


def compare(form: str, got: torch.Tensor, want: torch.Tensor, tolerance: float = REL_TOL) -> Check:
    found = agreement(got, want)
    return Check(form, found.rel_error, found.max_abs_error, found.differing_predictions, tolerance)


def run_onnx(path_or_session, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The ONNX model's outputs on ``inputs``, in onnxruntime on the CPU, ``batch`` rows at a time."""
    session = onnx_session(path_or_session) if isinstance(path_or_session, str) else path_or_session
    name = session.get_inputs()[0].name
    x = inputs.detach().float().cpu().numpy()
    outs = [session.run(None, {name: x[i:i + batch]})[0] for i in range(0, x.shape[0], batch)]
    return torch.cat([torch.from_numpy(o) for o in outs])


@torch.no_grad()
def _outputs(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model(inputs[i:i + batch]).float() for i in range(0, inputs.shape[0], batch)])


def export_contracted(model: nn.Module, inputs: torch.Tensor, out_dir: str, *, name: str = "model",
                      tolerance: float = REL_TOL, opset: Optional[int] = None) -> ExportReport:
    """Contract ``model`` (an expanded network, or a compact one: exported as it is), export it to
    ``out_dir/<name>.pt2`` and ``out_dir/<name>.onnx``, and check both against ``model`` on
    ``inputs`` (a batch of real inputs; the first two rows also trace the export). Raises
    ``ExportMismatch`` with the report when a check fails. Runs on the CPU, in float32."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or inputs.shape[0] < 2:
        raise ValueError("inputs must be a floating-point tensor of at least 2 examples (N, ...)")
    require_exporters()
    expanded = model.float().cpu().eval()
    compact = contract_model(expanded).eval() if any(isinstance(m, EXPANDED_TYPES) for m in expanded.modules()) \
        else expanded
    inputs = inputs.float().cpu()
    os.makedirs(out_dir, exist_ok=True)
    files = {"pt2": os.path.join(out_dir, f"{name}.pt2"), "onnx": os.path.join(out_dir, f"{name}.onnx")}
    example = (inputs[:2],)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(compact, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, files["pt2"])
    kwargs = {} if opset is None else {"opset_version": opset}
    torch.onnx.export(compact, example, files["onnx"], dynamo=True, verbose=False, input_names=["images"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), **kwargs)
    want = _outputs(expanded, inputs)
    checks = [compare("contracted", _outputs(compact, inputs), want, tolerance),
              compare("torch.export", _outputs(torch.export.load(files["pt2"]).module(), inputs), want, tolerance),
              compare("onnxruntime", run_onnx(files["onnx"], inputs), want, tolerance)]
    report = ExportReport(files, checks, int(inputs.shape[0]))
    if not report.ok:
        raise ExportMismatch(f"the exported model does not compute the expanded network's function:\n{report}")
    return report


# ------------------------------------------------------------------------------------ a training run
def _run_files(path: str):
    """``(model.pt, summary.json or None)`` of a run folder or of a model file inside one."""
    from expandnets_cuda.train.pipeline import SUMMARY_FILE
    folder, model_file = (path, os.path.join(path, "model.pt")) if os.path.isdir(path) else (os.path.dirname(path), path)
    summary = os.path.join(folder, SUMMARY_FILE)
    return model_file, (summary if os.path.isfile(summary) else None)


def _run_data(summary: Optional[str], data_dir: Optional[str]):
    """The run's dataset as its config names it (``None`` without a summary)."""
    if summary is None:
        return None
    from expandnets_cuda.train.data import load_dataset
    with open(summary) as f:
        config = json.load(f)["config"]
    return load_dataset(config["dataset"], data_dir if config["dataset"] != "digits" else None,
                        digits_size=config.get("digits_size", 32))


def export_run(path: str, out_dir: str, *, data_dir: Optional[str] = None, limit: int = 512,
               int8: bool = False, tolerance: float = REL_TOL) -> ExportReport:
    """``export_contracted`` for a training run (``python -m expandnets_cuda.train``'s output
    folder or its ``model.pt``): raw images in, the run's normalisation inside the exported graph,
    checked on the first ``limit`` test images. Without the run's ``summary.json`` (a bare model
    file), on random images of the model's input shape instead (``inputs`` says which)."""
    from expandnets_cuda.train.checkpoint import load_model
    from expandnets_cuda.train.loader import channel_stats
    model_file, summary = _run_files(path)
    net, arch = load_model(model_file, backend="torch")
    data = _run_data(summary, data_dir)
    if int8 and data is None:
        raise ValueError("--int8 calibrates on the run's training images: it needs the run's summary.json")
    if data is not None:
        mean, std = channel_stats(data.train.images)
        images, labels = data.test.images[:limit].float(), data.test.labels[:limit]
    else:
        mean, std = torch.full((arch.in_channels,), 0.5), torch.full((arch.in_channels,), 0.25)
        images = torch.rand(limit, arch.in_channels, arch.input_size, arch.input_size) * 255
        labels = None
    wrapped = Normalized(net, mean, std)
    report = export_contracted(wrapped, images, out_dir, tolerance=tolerance)
    report.extra.update(architecture=arch.to_dict(), inputs_from=("test split of " + data.name) if data else "random",
                        normalisation={"mean": mean.tolist(), "std": std.tolist(), "input_scale": "0..255"})
    if labels is not None:
        report.extra["accuracy"] = {"expanded": accuracy(_outputs(wrapped, images), labels),
                                    "onnx": accuracy(run_onnx(report.files["onnx"], images), labels)}
    if int8:
        from expandnets_cuda.deploy.quantize import quantize_onnx
        calibration = data.train.images[:limit].float()
        report.files["onnx_int8"] = quantize_onnx(report.files["onnx"], calibration,
                                                  os.path.join(out_dir, "model.int8.onnx"))
        report.extra["accuracy"]["onnx_int8"] = accuracy(run_onnx(report.files["onnx_int8"], images), labels)
    return _written(report, out_dir)


def export_paper(name: str, out_dir: str, *, input_size: Optional[int] = None, count: int = 16) -> ExportReport:
    """The paper's ExpandNet of network ``name`` (``models.PAPER_PRESETS``), freshly initialised
    with random BN statistics, exported and checked on ``count`` random images."""
    from expandnets_cuda.models import paper_preset
    preset = paper_preset(name)
    model = preset.expand(backend="torch").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    channels, height, width = preset.input_shape
    if input_size is not None:
        height = width = input_size
    inputs = torch.randn(count, channels, height, width, generator=generator)
    report = export_contracted(model, inputs, out_dir)
    report.extra.update(network=name, inputs_from="random")
    return _written(report, out_dir)


def _written(report: ExportReport, out_dir: str) -> ExportReport:
    """``report``, also written to ``out_dir/export.json``."""
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(report.to_dict(), f, indent=1)
    return report


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="expandnets-export", description="Contract a trained ExpandNet, export it (torch.export and ONNX) and "
        "check the exported files against the expanded network. Exit status 1 if they differ.")
    parser.add_argument("run", nargs="?", help="a training run's folder (python -m expandnets_cuda.train --out-dir) "
                        "or its model.pt")
    parser.add_argument("--paper", metavar="NETWORK", help="instead of a run: the paper's ExpandNet of NETWORK "
                        "(a key of expandnets_cuda.models.PAPER_PRESETS), freshly initialised, checked on random images")
    parser.add_argument("--input-size", type=int, help="with --paper: the image size (default: the preset's)")
    parser.add_argument("--out", help="where to write (default: <run>/export, or ./export-<NETWORK>)")
    parser.add_argument("--data-dir", help="the CIFAR copy the run trained on (digits needs none)")
    parser.add_argument("--limit", type=int, default=512, help="test images to check on")
    parser.add_argument("--int8", action="store_true", help="also a statically quantized INT8 ONNX file")
    args = parser.parse_args(argv)
    if (args.run is None) == (args.paper is None):
        parser.error("give a training run or --paper NETWORK (one of them)")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on optional torchvision ops
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch's own pytree
    try:
        if args.paper is not None:
            out = args.out or f"export-{args.paper}"
            report = export_paper(args.paper, out, input_size=args.input_size, count=min(args.limit, 16))
        else:
            model_file, _ = _run_files(args.run)
            out = args.out or os.path.join(os.path.dirname(model_file) or ".", "export")
            report = export_run(args.run, out, data_dir=args.data_dir, limit=args.limit, int8=args.int8)
    except ExportMismatch as err:
        print(err, file=sys.stderr)
        return 1
    except (ImportError, ValueError, FileNotFoundError) as err:
        print(f"expandnets-export: {err}", file=sys.stderr)
        return 2
    print(report)
    accuracy = report.extra.get("accuracy")
    if accuracy:
        print("  accuracy on those inputs: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in accuracy.items()))
    print("OK: the exported files compute the expanded network's function")
    return 0


if __name__ == "__main__":
    sys.exit(main())
