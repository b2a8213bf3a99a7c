"""Deployment: the contracted network exported (torch.export and ONNX) computes the expanded
network's function, checked in onnxruntime; a wrong export is refused; the command exports a
training run and quantizes it to INT8."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda import models
from expandnets_cuda.deploy import export
from helpers import randomise_bn

pytest.importorskip("onnxruntime", reason=f"exporting needs {export.INSTALL_HINT}")
pytest.importorskip("onnxscript", reason=f"exporting needs {export.INSTALL_HINT}")


class EveryPadding(nn.Module):
    """Every padding mode, groups, depthwise, stride 2, dilation, a CK kernel and an FC layer."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, padding_mode="zeros"), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect"), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, padding_mode="replicate"), nn.ReLU(),
            nn.Conv2d(8, 6, 3, padding=2, dilation=2, padding_mode="circular"), nn.ReLU(),
            nn.Conv2d(6, 6, 5, padding=2), nn.ReLU())
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.convs(x).mean((2, 3)))


def _every_padding():
    model = ec.expand_model(EveryPadding(), "cl", 2, fc=True, layers=lambda n, m: n != "convs.8",
                            backend="torch")
    return ec.expand_model(model, "ck", 2, layers=["convs.8"], backend="torch", inplace=True)


# name -> (expanded network, input shape): the paper's CIFAR and ImageNet networks (ImageNet ones
# at 64 pixels: they pool globally), as the paper expands them, and the padding zoo.
NETWORKS = {
    "smallnet7-cl+fc": (lambda: ec.expand_model(models.smallnet7(), "cl", 2, fc=True, backend="torch"), (3, 32, 32)),
    "smallnet7-ck": (lambda: ec.expand_model(models.smallnet7(), "ck", 2, backend="torch"), (3, 32, 32)),
    "mobilenet_v1_cifar": (lambda: models.expand_paper("mobilenet_v1_cifar", backend="torch"), (3, 32, 32)),
    "mobilenet_v2_cifar": (lambda: models.expand_paper("mobilenet_v2_cifar", backend="torch"), (3, 32, 32)),
    "mobilenet_v2": (lambda: models.expand_paper("mobilenet_v2", backend="torch"), (3, 64, 64)),
    "shufflenet_v2_x0_5": (lambda: models.expand_paper("shufflenet_v2_x0_5", backend="torch"), (3, 64, 64)),
    "every-padding-mode": (_every_padding, (3, 17, 15)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_the_exported_files_compute_the_expanded_networks_function(name, tmp_path):
    build, shape = NETWORKS[name]
    model = build().eval()
    randomise_bn(model)
    report = export.export_contracted(model, torch.randn(6, *shape), str(tmp_path))
    assert report.ok, report
    assert [c.form for c in report.checks] == ["contracted", "torch.export", "onnxruntime"]
    for check in report.checks:
        assert check.rel_error <= export.REL_TOL, check
    # the batch dimension is dynamic in both files
    x = torch.randn(3, *shape)
    with torch.no_grad():
        want = model(x)
    for got in (export.run_onnx(report.files["onnx"], x), torch.export.load(report.files["pt2"]).module()(x)):
        assert export.compare("batch 3", got, want).ok


def test_an_export_that_computes_something_else_is_refused(tmp_path, monkeypatch):
    model = ec.expand_model(models.smallnet3(), "cl", 2, backend="torch").eval()
    wrong = ec.contract_model(model)
    with torch.no_grad():
        wrong.blocks[1].conv.weight[0, 0, 0, 0] += 0.5
    monkeypatch.setattr(export, "contract_model", lambda m: wrong)
    with pytest.raises(export.ExportMismatch, match="MISMATCH"):
        export.export_contracted(model, torch.randn(8, 3, 32, 32), str(tmp_path))


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(TypeError, match="model"):
        export.export_contracted("model.pt", torch.randn(2, 3), str(tmp_path))
    with pytest.raises(ValueError, match="inputs"):
        export.export_contracted(nn.Linear(3, 2), torch.randn(1, 3), str(tmp_path))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A SmallNet k=3 ExpandNet-CL trained for two epochs on the digits (the quick recipe)."""
    out = tmp_path_factory.mktemp("run")
    from expandnets_cuda.train.pipeline import run
    run(model="smallnet3", form="cl", rate=2, epochs=2, dataset="digits", train_limit=512, test_limit=256,
        out_dir=str(out), progress=False, backend="torch")
    return out


def test_the_command_exports_a_training_run_with_int8(digits_run):
    out = digits_run / "export"
    done = subprocess.run([sys.executable, "-m", "expandnets_cuda.deploy.export", str(digits_run), "--int8", "--limit", "256"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK: the exported files compute the expanded network's function" in done.stdout
    record = json.loads((out / "export.json").read_text())
    assert record["ok"] and record["inputs_from"] == "test split of digits"
    assert {"model.onnx", "model.pt2", "model.int8.onnx", "export.json"} <= {p.name for p in out.iterdir()}
    accuracy = record["accuracy"]
    assert accuracy["onnx"] == pytest.approx(accuracy["expanded"], abs=1 / 256)
    assert accuracy["onnx_int8"] >= accuracy["onnx"] - 0.05  # INT8 keeps the accuracy (within 5 points)


def test_the_command_fails_loudly_on_a_missing_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "expandnets_cuda.deploy.export", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "does not exist" in done.stderr
