"""The benchmark code paths on tiny sizes: layer rows, network rows, JSON and PNG outputs."""
import json

import pytest
import torch

from bench import report
from bench.cases import layer_cases
from bench.layers import bench_layer
from bench.memory import saved_for_backward_bytes
from bench.network import bench_network, build
from bench.run import main


def test_layer_cases_cover_the_models():
    seven = layer_cases("smallnet7")
    assert [(c.in_channels, c.out_channels, c.input_chw[1]) for c in seven] == [
        (3, 8, 32), (8, 16, 16), (16, 32, 8), (32, 64, 4)]
    assert all(c.strategies(["cl", "ck"]) == ["cl", "ck"] for c in seven)
    mobile = layer_cases("mobilenet_v2")
    assert any(c.groups == c.in_channels > 1 for c in mobile) and any(c.groups == 1 for c in mobile)
    assert all(c.strategies(["cl", "ck"]) == ["cl"] for c in mobile)


def test_bench_layer_rows_are_consistent():
    case = layer_cases("smallnet3")[1]
    rows = bench_layer(case, "cl", 2, ["torch"], 2, torch.device("cpu"), torch.float32, 0.01)
    assert [r["impl"] for r in rows] == ["compact", "unfused", "fused[torch]"]
    for r in rows:
        assert r["fwd_ms"] > 0 and r["bwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["saved_bytes"] > 0
        assert r["fwd_bwd_vs_compact"] == pytest.approx(r["fwd_bwd_ms"] / rows[0]["fwd_bwd_ms"])
        assert r["fwd_bwd_speedup_vs_unfused"] == pytest.approx(rows[1]["fwd_bwd_ms"] / r["fwd_bwd_ms"])
    # The unfused chain keeps r-times wider activations alive than the compact conv.
    assert rows[1]["saved_bytes"] > rows[0]["saved_bytes"]


def test_saved_bytes_counts_distinct_storages():
    x = torch.randn(1000, requires_grad=True)
    assert saved_for_backward_bytes(lambda: (x * x).sum()) == 4000  # x saved twice, one storage
    assert saved_for_backward_bytes(lambda: (x.exp() * 2).sum()) == 4000  # exp saves its output


def test_network_forms_and_rows():
    assert sum(p.numel() for p in build("smallnet7", "cl", 2, "torch").parameters()) == 562_954
    assert sum(p.numel() for p in build("smallnet7", "fc", 2, "torch").parameters()) > 150_346
    row = bench_network("smallnet3", "cl+fc", 2, True, 4, torch.device("cpu"), 0.01)
    assert row["variant"] == "fused" and row["images_per_s"] > 0 and row["params"] > 15_050


def test_cli_tiny_run_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "run.json"
    record = main(["--device", "cpu", "--models", "smallnet3", "--strategies", "cl", "--rates", "2,4",
                   "--layer-batch", "2", "--network-batch", "2", "--min-run-time", "0.01",
                   "--network-models", "smallnet3", "--forms", "compact,cl", "--backends", "torch,auto",
                   "--no-progress", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["layers"] == record["layers"] and len(saved["layers"]) == 3 * 2 * 4
    assert {r["variant"] for r in saved["networks"]} == {"compact", "unfused", "fused"}
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["date"]
    assert out.with_suffix(".png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "Layers" in printed and "Networks" in printed


def test_paper_ratio_lookup():
    ratio = report.paper_train_ratio("smallnet7", "cl")
    if report.PAPER_TABLES.exists():
        assert ratio == pytest.approx(64651.81 / 147822.51)
    else:
        assert ratio is None


def test_kernel_bench_tiny(tmp_path):
    from bench.kernels import main as kernels_main
    out = tmp_path / "kernels.json"
    record = kernels_main(["--device", "cpu", "--models", "smallnet7", "--rates", "2", "--batch", "2",
                           "--min-run-time", "0.005", "--out", str(out)])
    kinds = {(r["kind"], r["impl"]) for r in record["rows"]}
    assert kinds == {("conv", "aten"), ("conv", "torch"), ("compose", "torch")}
    compose = [r for r in record["rows"] if r["kind"] == "compose"]
    assert {r["strategy"] for r in compose} == {"cl", "ck"} and all(r["fwd_bwd_us"] > 0 for r in compose)
    assert json.loads(out.read_text())["rows"] == record["rows"]


def test_train_epochs_bench_tiny(tmp_path):
    from bench.train_epochs import RUNS, main as epochs_main
    record = epochs_main(["--device", "cpu", "--epochs", "1", "--train-limit", "32", "--batch", "16",
                          "--out", str(tmp_path / "epochs.json")])
    assert [r["run"] for r in record["rows"]] == [label for label, _, _ in RUNS]
    assert all(r["median_epoch_s"] > 0 for r in record["rows"]) and record["rows"][0]["vs_compact"] == 1.0
