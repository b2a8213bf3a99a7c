"""The benchmark code paths on tiny sizes: layer rows, network rows, JSON and PNG outputs."""
import copy
import json

import pytest
import torch

import expandnets_cuda as ec
from bench import report
from bench.cases import layer_cases
from bench.layers import bench_layer
from bench.memory import saved_for_backward_bytes
from bench.network import bench_networks, build
from bench.peers import PEERS, build_peer, online_collapse
from bench.run import main, network_forms


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
    rows = bench_layer(case, "cl", 2, ["torch"], 2, torch.device("cpu"), torch.float32, 0.01, ["collapse"], 3)
    assert [r["impl"] for r in rows] == ["compact", "unfused", "fused[torch]", "collapse"]
    for r in rows:
        assert r["fwd_ms"] > 0 and r["bwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["saved_bytes"] > 0
        assert len(r["fwd_bwd_samples_ms"]) == 3 and r["fwd_bwd_spread"] >= 0 and r["threads"] >= 1
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
    rows = bench_networks("smallnet3", ["cl+fc"], [2.0], 4, torch.device("cpu"), 0.01, rounds=2)
    row = next(r for r in rows if r["variant"] == "fused")
    assert row["variant"] == "fused" and row["images_per_s"] > 0 and row["params"] > 15_050


def test_network_round_robin_has_every_variant_and_ratios():
    rows = report.network_ratios(bench_networks("smallnet3", ["compact", "cl"], [2.0], 2, torch.device("cpu"),
                                                0.01, rounds=3, peers=["collapse"]))
    assert [(r["form"], r["variant"]) for r in rows] == [
        ("compact", "compact"), ("cl", "fused"), ("cl", "unfused"), ("cl", "collapse")]
    compact, fused, unfused, peer = rows
    assert fused["throughput_vs_compact"] == pytest.approx(compact["step_ms"] / fused["step_ms"])
    assert fused["speedup_vs_unfused"] == pytest.approx(unfused["step_ms"] / fused["step_ms"])
    assert fused["best_peer"] == "collapse"
    assert fused["speedup_vs_best_peer"] == pytest.approx(peer["step_ms"] / fused["step_ms"])
    assert fused["paper_unfused_vs_compact_r4"] is None  # the paper's figure is for r=4 only
    line = report.headline(rows)
    assert "smallnet3 CL r=2" in line and "best peer's (collapse)" in line and len(line.splitlines()) == 1
    assert f"uses {fused['saved_vs_compact']:.2f}x the compact network's memory for backward" in line


def _expanded_twins(form):
    torch.manual_seed(1)
    unfused = build("smallnet3", form, 2, "reference").double()
    return unfused, online_collapse(copy.deepcopy(unfused))


@pytest.mark.parametrize("form", ["cl+fc", "fc"])
def test_online_collapse_peer_is_the_same_function_and_gradients(form):
    unfused, peer = _expanded_twins(form)
    assert sum(type(m).__name__.startswith("OnlineCollapse") for m in peer.modules()) >= 1
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    a, b = unfused(x), peer(x)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(a.square().sum(), list(unfused.parameters()))
    gb = torch.autograd.grad(b.square().sum(), list(peer.parameters()))
    for p, q in zip(ga, gb):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("channels,kwargs", [
    ((4, 6), dict(kernel_size=3, padding=1, stride=2, groups=2, dilation=2, strategy="cl")),
    ((8, 2), dict(kernel_size=3, padding=1, strategy="cl", rate=2)),  # the other product order
    ((4, 6), dict(kernel_size=2, padding="same", padding_mode="reflect", strategy="cl")),  # asymmetric, reflect
    ((4, 6), dict(kernel_size=7, padding=(2, 3), stride=2, strategy="ck")),
    ((4, 6), dict(kernel_size=5, padding=1, dilation=2, strategy="ck", bias=False))])
def test_online_collapse_conv_matches_the_unfused_unit(channels, kwargs):
    torch.manual_seed(2)
    kwargs = {"rate": 1.5, **kwargs}
    unit = ec.FusedExpandConv2d(*channels, backend="reference", dtype=torch.float64, **kwargs)
    peer = build_peer("collapse", torch.nn.Sequential(unit))
    x = torch.randn(2, channels[0], 13, 12, dtype=torch.float64, requires_grad=True)
    a, b = unit(x), peer(x)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    grads = [torch.autograd.grad(y.square().sum(), [x, *unit.parameters()]) for y in (a, b)]
    for p, q in zip(*grads):
        assert torch.allclose(p, q, rtol=1e-9, atol=1e-12)


def test_compiled_collapse_peer_matches_the_chain():
    unfused, _ = _expanded_twins("cl")
    peer = build_peer("collapse-compile", copy.deepcopy(unfused), compile_backend="aot_eager")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(peer(x), unfused(x), rtol=1e-10, atol=1e-12)
    assert hasattr(peer, "_orig_mod")


def test_compiled_peer_wraps_the_unfused_chain():
    # The benchmark compiles with Inductor; aot_eager checks the plumbing (same graph, no codegen) quickly.
    unfused, _ = _expanded_twins("cl")
    peer = build_peer("compile", copy.deepcopy(unfused), compile_backend="aot_eager")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(peer(x), unfused(x), rtol=1e-12, atol=1e-12)
    assert peer is not unfused and hasattr(peer, "_orig_mod")


def test_unknown_peer_and_forms_filtered_by_strategy():
    with pytest.raises(ValueError, match="peer"):
        build_peer("orepa", torch.nn.Linear(2, 2))
    assert PEERS == ("collapse", "collapse-compile", "compile")
    assert network_forms(["compact", "cl", "ck", "cl+fc", "ck+fc", "fc"], ["cl"]) == ["compact", "cl", "cl+fc", "fc"]
    with pytest.raises(SystemExit, match="--forms"):
        network_forms(["cx"], ["cl"])


def test_cli_tiny_run_writes_json_and_plots(tmp_path, capsys):
    out = tmp_path / "run.json"
    argv = ["--device", "cpu", "--models", "smallnet3", "--strategies", "cl", "--rates", "2,4",
            "--layer-batch", "2", "--network-batch", "2", "--min-run-time", "0.01", "--rounds", "2",
            "--network-models", "smallnet3", "--forms", "compact,cl,ck", "--backends", "torch,auto",
            "--peers", "collapse", "--no-progress", "--out", str(out)]
    record = main(argv)
    saved = json.loads(out.read_text())
    assert saved["layers"] == record["layers"] and len(saved["layers"]) == 3 * 2 * 5
    assert {r["variant"] for r in saved["networks"]} == {"compact", "unfused", "fused", "collapse"}
    assert {r["form"] for r in saved["networks"]} == {"compact", "cl"}  # --strategies cl: no CK form
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["date"]
    assert saved["environment"]["command"] == "python -m bench.run " + " ".join(argv)
    assert saved["environment"]["threads"] == torch.get_num_threads()
    assert len(saved["headline"]) == 2
    for suffix in ("-networks.png", "-layers.png"):
        assert out.with_name(out.stem + suffix).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "Headline" in printed and "Networks" in printed
    assert "Layers (batch" not in printed and "--verbose prints their tables" in printed  # a screen, not a log


def test_layer_labels_are_never_cut():
    row = {"label": "mobilenet_v2:features.17.conv.1 dw 960->960 k3 s1 @32x32", "strategy": "cl", "rate": 4.0,
           "impl": "fused[triton+torch]", "fwd_ms": 1.0, "bwd_ms": 2.0, "fwd_bwd_ms": 3.0, "fwd_bwd_spread": 0.01,
           "fwd_bwd_vs_compact": 1.5, "fwd_bwd_speedup_vs_unfused": 2.0, "saved_bytes": 2**20}
    table = report.format_layer_rows([row, {**row, "label": "smallnet3:blocks.0.conv conv 3->8 k3 s1 @32x32"}])
    assert row["label"] in table and "@32x32" in table.splitlines()[2] and "fused[triton+torch]" in table


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
    record = epochs_main(["--device", "cpu", "--epochs", "1", "--train-limit", "32", "--batch", "16", "--repeats", "1",
                          "--out", str(tmp_path / "epochs.json")])
    assert [r["run"] for r in record["rows"]] == [label for label, _, _ in RUNS]
    assert all(r["median_epoch_s"] > 0 for r in record["rows"]) and record["rows"][0]["vs_compact"] == 1.0


def test_timer_check_tiny(tmp_path):
    from bench.check_timer import main as check_main
    record = check_main(["--batch", "2", "--model", "smallnet3", "--steps", "3", "--min-run-time", "0.05",
                         "--threads", str(torch.get_num_threads()), "--out", str(tmp_path / "timer.json")])
    assert record["timer_ms"] > 0 and len(record["plain_ms"]) == 2 and record["verdict"] in ("OK", "DISAGREE")
    assert json.loads((tmp_path / "timer.json").read_text())["ratio"] == record["ratio"]


def test_network_rows_count_launches_and_nonlinear_table_formats():
    rows = bench_networks("smallnet3", ["compact", "cl"], [2.0], 2, torch.device("cpu"), 0.01, rounds=2)
    assert all(isinstance(r["launches"], int) and r["launches"] > 0 for r in rows)
    assert "launches per step (compact" in report.headline(report.network_ratios(rows))
    from bench.nonlinear import bench_nonlinear_layer
    case = layer_cases("smallnet3")[2]
    nonlinear = bench_nonlinear_layer(case, "cl", 2, ["reference"], 2, "cpu", torch.float32, 0.01, rounds=2)
    table = report.format_nonlinear_rows(nonlinear).splitlines()
    assert len(table) == 3 and "chain[reference]" in table[2]


def test_saved_bytes_leaves_out_parameters():
    layer = torch.nn.Linear(100, 100)
    x = torch.randn(7, 100, requires_grad=True)
    assert saved_for_backward_bytes(lambda: layer(x).sum()) == 7 * 100 * 4 + 100 * 100 * 4
    assert saved_for_backward_bytes(lambda: layer(x).sum(), layer.parameters()) == 7 * 100 * 4


def test_step_profile_attributes_the_added_time_and_counts_the_floor():
    from bench import step_profile
    r = step_profile.report("smallnet3", "cl+fc", 2.0, 2, torch.device("cpu"), steps=1)
    assert r["compact"]["composition"] == 0.0 and r["fused"]["composition"] > 0.0
    assert r["fused"]["optimizer"] > 0.0 and r["composition_floor_ms"] > 0.0
    text = step_profile.format_report(r)
    assert "composition floor" in text and text.count("\n") >= 6


@pytest.mark.parametrize("strategy", ["cl", "ck"])
def test_composition_macs_follow_the_cost_model(strategy):
    """CL: the cheaper forward order + the chosen backward plan per group; CK: every fold forward,
    the partials again and two GEMMs per fold backward (counted by hand for a 5x5 -> two 3x3)."""
    from bench import step_profile
    from expandnets_cuda import composition_products as products
    unit = ec.FusedExpandConv2d(4, 6, 5, padding=2, strategy=strategy, rate=2, backend="torch")
    macs = step_profile.composition_macs(unit)
    if strategy == "cl":
        i, a, c, o, t = 4, 8, 12, 6, 25
        assert macs == min(products.cl_cost(i, a, c, o, t, 1)) + products.cl_backward_plan(i, a, c, o, t).cost
    else:
        (o0, i0), (o1, _) = [tuple(layer.weight.shape[:2]) for layer in unit.layers]
        fold = o1 * 9 * o0 * i0 * 9  # the only fold: (o1, o0, 3x3) after (o0, i0, 3x3)
        assert macs == fold + 0 + 2 * fold
