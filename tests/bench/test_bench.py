"""The benchmark code paths on tiny sizes: layer rows, network rows, JSON and PNG outputs."""
import copy
import json

import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.train.cpu_memory import has_glibc
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
    assert fused["best_like_peer"] == "collapse"  # eager against eager
    line = report.headline(rows)
    assert "smallnet3 CL r=2" in line and "the strongest peer (collapse)" in line and len(line.splitlines()) == 1
    assert f"{fused['speedup_vs_best_like_peer']:.2f}x collapse's" in line
    assert f"uses {fused['saved_vs_compact']:.2f}x the compact network's memory for backward" in line
    per_round = fused["per_round_vs_best_peer"]  # from the same rounds' samples
    ratios = sorted(a / b for a, b in zip(peer["step_samples_ms"], fused["step_samples_ms"]))
    assert per_round["median"] == pytest.approx(ratios[1]) and per_round["q1"] <= per_round["q3"]
    assert f"per round {per_round['median']:.2f}x" in line
    grid = report.format_peer_grid(rows).splitlines()
    assert grid[0].split()[:3] == ["model", "form", "r=2"] and grid[1].startswith("smallnet3     cl ")


def test_the_peer_grid_reads_each_rate_round_by_round():
    def row(variant, samples, form="cl", rate=4.0):
        samples = list(samples)
        return {"model": "m", "form": form, "rate": rate if form != "compact" else None, "variant": variant,
                "step_ms": sorted(samples)[len(samples) // 2], "step_samples_ms": samples,
                "images_per_s": 1.0, "saved_bytes": 10, "params": 5 if form != "compact" else 1}
    # Rate 2: the peer is slower in every round although a slow round puts their medians level.
    # Rate 4: the rounds straddle 1. Rate 8: the fused model is slower in every round.
    rows = report.network_ratios([
        row("compact", [10, 10, 10, 10, 10], "compact"),
        row("fused", [12, 12, 24, 12, 24], rate=2.0), row("collapse", [12.6, 12.6, 25.2, 12.6, 25.2], rate=2.0),
        row("fused", [12, 12, 12, 12, 12]), row("collapse", [11, 13, 12, 11.5, 12.5]),
        row("fused", [12, 12, 12, 12, 12], rate=8.0), row("collapse", [11, 11.5, 11, 11.5, 11], rate=8.0)])
    verdicts = {r["rate"]: r["per_round_vs_best_peer"]["verdict"] for r in rows if r["variant"] == "fused"}
    assert verdicts == {2.0: "above", 4.0: "parity", 8.0: "below"}
    grid = report.format_peer_grid(rows).splitlines()
    assert len(grid) == 2 and grid[1].split()[:2] == ["m", "cl"]
    assert "1.05 (1.05-1.05) faster" in grid[1] and "1.00 (0.96-1.04) parity" in grid[1] and "slower" in grid[1]
    assert report.format_peer_grid([r for r in rows if r["variant"] == "compact"]) == ""


def test_the_compiled_fused_model_joins_where_asked_and_is_compared_like_for_like():
    from bench.network import network_variants
    names = [v.variant for v in network_variants("smallnet3", ["cl"], [2.0, 4.0], 2, torch.device("cpu"),
                                                 backend="torch", fused_compile_rates=[4.0])]
    assert names == ["compact", "fused", "unfused", "fused", "unfused", "fused-compile"]

    from bench import run
    args = run.parse_args(["--fused-compile"])
    assert run.fused_compile_rates(args, ["collapse", "collapse-compile"], [4.0]) == [4.0]
    assert run.fused_compile_rates(args, ["collapse"], [4.0]) == []  # no compiled peer: nothing to match
    assert run.fused_compile_rates(run.parse_args([]), ["collapse-compile"], [4.0]) == []  # opt-in

    def row(variant, ms, form="cl"):
        return {"model": "m", "form": form, "rate": 4.0 if form != "compact" else None, "variant": variant,
                "step_ms": ms, "images_per_s": 1000 / ms, "saved_bytes": 10, "params": 5 if form != "compact" else 1}
    rows = report.network_ratios([row("compact", 10.0, "compact"), row("fused", 12.0), row("unfused", 30.0),
                                  row("fused-compile", 10.5), row("collapse", 12.6), row("collapse-compile", 11.0)])
    by = {r["variant"]: r for r in rows}
    eager, compiled = by["fused"], by["fused-compile"]
    assert (eager["best_like_peer"], compiled["best_like_peer"]) == ("collapse", "collapse-compile")
    assert eager["speedup_vs_best_like_peer"] == pytest.approx(12.6 / 12.0)
    assert compiled["speedup_vs_best_like_peer"] == pytest.approx(11.0 / 10.5)
    assert eager["best_peer"] == compiled["best_peer"] == "collapse-compile"  # the strongest of any kind
    assert eager["speedup_vs_best_peer"] == pytest.approx(11.0 / 12.0)
    line = report.headline(rows)
    assert "1.05x collapse's" in line and "compiled 1.05x collapse-compile's" in line
    assert "best fused (fused-compile) 1.05x the strongest peer (collapse-compile)" in line
    # The grid shows the headline's best fused model, the compiled one here (eager: 0.92x).
    samples = {"compact": [10.0] * 3, "fused": [12.0] * 3, "unfused": [30.0] * 3, "fused-compile": [10.5] * 3,
               "collapse": [12.6] * 3, "collapse-compile": [11.0] * 3}
    rows = report.network_ratios([{**row(v, samples[v][0], "compact" if v == "compact" else "cl"),
                                   "step_samples_ms": samples[v]} for v in samples])
    assert "1.05 (1.05-1.05) faster [compiled]" in report.format_peer_grid(rows).splitlines()[1]


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
            "--peers", "collapse", "--skip-scaling", "--no-progress", "--out", str(out)]
    record = main(argv)
    saved = json.loads(out.read_text())
    assert saved["layers"] == record["layers"] and len(saved["layers"]) == 3 * 2 * 5
    assert {r["variant"] for r in saved["networks"]} == {"compact", "unfused", "fused", "collapse"}
    assert {r["form"] for r in saved["networks"]} == {"compact", "cl"}  # --strategies cl: no CK form
    assert saved["environment"]["torch"] == torch.__version__ and saved["environment"]["date"]
    assert saved["environment"]["command"] == "python -m bench.run " + " ".join(argv)
    assert saved["environment"]["threads"] == torch.get_num_threads()
    assert set(saved["environment"]["allocator"]) == {"retain_freed_memory", "GLIBC_TUNABLES", "LD_PRELOAD"}
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
    r = step_profile.report("smallnet3", "cl+fc", 2.0, 2, torch.device("cpu"), steps=1, rounds=2)
    assert r["compact"]["composition"] == 0.0 and r["fused"]["composition"] > 0.0
    assert r["fused"]["optimizer"] > 0.0 and r["composition_floor_ms"] > 0.0
    t = r["timed"]
    assert t["composition"] > 0.0 and t["composition_per_operator"] > 0.0
    assert t["rest"] == pytest.approx(t["added"] - t["composition"] - t["optimizer"])
    phases = r["phases"]
    assert set(phases) == {"compose_forward", "compose_backward", "optimizer"}
    assert phases["optimizer"]["gmac"] == 0 and phases["optimizer"]["mb"] > 0  # memory-bound by definition
    assert r["floor_ms"] == pytest.approx(sum(p["floor_ms"] for p in phases.values()))
    assert r["added_vs_floor"] == pytest.approx(t["added"] / r["floor_ms"])
    kinds = r["composition_kinds"]
    assert set(kinds) == set(step_profile.KINDS)
    assert kinds["gemm"]["ops"] > 0 and kinds["gemm"]["gflops"] > 0 and kinds["per-operator"]["ops"] > 0
    assert r["largest_composition_ops"] and all(ms >= 0 for _, ms in r["largest_composition_ops"])
    text = step_profile.format_report(r)
    assert "x the floor" in text and "compose_backward" in text and "composition alone" in text
    assert "the rest" in text and "GFLOP/s on the composition" in text and "page faults" in text
    assert set(r["minor_faults"]) == {"compact step", "fused step", "composition alone"}
    assert all(n >= 0 for n in r["minor_faults"].values())
    assert r["gemm_gflops"] > 0 and r["copy_gbps"] > 0  # from probes timed beside the steps


def test_step_profile_paired_difference_is_per_round():
    from bench import step_profile
    from expandnets_cuda.timing import Timing
    slow, fast = Timing([0.010, 0.020, 0.030]), Timing([0.009, 0.018, 0.030])
    assert step_profile._paired_difference_ms(slow, fast) == pytest.approx(1.0)  # rounds: 1, 2, 0 ms


@pytest.mark.parametrize("name,kind", [("aten::bmm", "gemm"), ("aten::baddbmm", "gemm"), ("aten::addmv_", "gemm"),
                                       ("aten::matmul", "gemm"), ("aten::convolution_backward", "gemm"),
                                       ("aten::copy_", "memory"), ("aten::sum", "memory"), ("aten::add_", "memory"),
                                       ("aten::view", "per-operator"), ("aten::transpose", "per-operator"),
                                       ("aten::clone", "per-operator"), ("_ComposeCLBackward", "per-operator"),
                                       ("autograd::engine::evaluate_function: ViewBackward0", "per-operator")])
def test_step_profile_operator_kinds(name, kind):
    from bench import step_profile
    assert step_profile.operator_kind(name) == kind


@pytest.mark.parametrize("form", ["cl", "fc", "ck"])
def test_step_profile_gives_every_composer_to_the_composition(form):
    """Each composer's Function and its backward node (``_ComposeFCBackward`` included) count as
    composition, never as the network."""
    from bench import step_profile
    from bench.network import Variant, build
    variant = Variant(build("smallnet7", form, 2.0, "torch"), form, 2.0, "fused", 2, torch.device("cpu"))
    parts, ops, kinds = step_profile.profile_step(variant, steps=1, warmup=1)
    assert parts["composition"] > 0 and ops
    with torch.profiler.profile() as prof:
        variant.step()
    composers = [e for e in prof.events() if e.name.startswith("_Compose")]
    assert composers and all(step_profile._part(e) == "composition" for e in composers)


def test_composition_and_optimizer_calls_leave_the_model_as_it_was():
    from bench import step_profile
    from bench.network import Variant, build
    variant = Variant(build("smallnet3", "cl+fc", 2.0, "torch"), "cl+fc", 2.0, "fused", 2, torch.device("cpu"))
    variant.step()
    before = {name: p.detach().clone() for name, p in variant.model.named_parameters()}
    for p in variant.model.parameters():
        p.grad = None
    compose, optimize = step_profile.composition_call(variant.model), step_profile.optimizer_call(variant)
    compose()
    optimize()
    for name, p in variant.model.named_parameters():
        assert p.grad is None and torch.equal(p, before[name]), name
    with pytest.raises(ValueError, match="network composer"):
        step_profile.composition_call(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("form", ["cl", "ck", "cl+fc"])
def test_width_one_twin_composes_the_same_units_at_one_channel_per_group(form):
    """The twin keeps every unit's kernels, groups and biases; each sub-layer has one channel per
    group; its composition runs, forward and backward, and the model it came from is untouched."""
    from bench import roofline, step_profile
    from bench.network import Variant, build
    variant = Variant(build("smallnet7", form, 2.0, "torch"), form, 2.0, "fused", 2, torch.device("cpu"))
    variant.step()
    shapes = [tuple(p.shape) for p in variant.model.parameters()]
    twin = step_profile.width_one_twin(variant.model)
    assert [tuple(p.shape) for p in variant.model.parameters()] == shapes
    units, twin_units = roofline.fused_units(variant.model), roofline.fused_units(twin)
    assert len(units) == len(twin_units) > 0
    for unit, small in zip(units, twin_units):
        for layer, tiny in zip(unit.layers, small.layers):
            groups = getattr(layer, "groups", 1)
            assert tuple(tiny.weight.shape) == (groups, 1, *layer.weight.shape[2:])
            assert (tiny.bias is None) == (layer.bias is None)
        weight, _ = small.composed_weight(backend="torch")
        assert tuple(weight.shape[2:]) == tuple(unit.composed_weight(backend="torch")[0].shape[2:])
    step_profile.composition_call(twin)()
    assert all(p.grad is None for p in twin.parameters())


def test_roofline_rates_come_from_their_probes():
    from bench import roofline
    probes = roofline.rate_probes(torch.device("cpu"))
    m, k, n = roofline.GEMM_SHAPE
    assert tuple(probes["gemm"]().shape) == (m, n)
    rates = roofline.rates_from_seconds(2 * m * k * n / 1e9, 2 * roofline.COPY_MEGABYTES * (1 << 20) / 1e9)
    assert rates.gemm_gflops == pytest.approx(1.0) and rates.copy_gbps == pytest.approx(1.0)
    measured = roofline.measure_rates(torch.device("cpu"), repeats=2)
    assert measured.gemm_gflops > 0 and measured.copy_gbps > 0


def test_roofline_work_of_a_unit_by_hand():
    """CL 4->6 k=3 r=2, bias: forward the cheaper order, backward the chosen plan; bytes read the
    parameters and write the composed weight (forward), read it and write every gradient (backward);
    SGD momentum moves 5 float32 passes over the parameters the expansion adds."""
    from bench import roofline
    from expandnets_cuda.compose import products
    compact = nn.Sequential(nn.Conv2d(4, 6, 3))
    fused = ec.expand_model(compact, "cl", 2, backend="torch")
    (unit,) = roofline.fused_units(fused)
    params = sum(p.numel() for p in unit.parameters())
    i, a, c, o, t = 4, 8, 12, 6, 9
    work = roofline.added_work(fused, compact)
    assert work["compose_forward"].macs == min(products.cl_cost(i, a, c, o, t, 1))
    kept = products.cl_kept_intermediate(i, a, c, o, t)  # R (c*t*i = 432 values): kept from forward
    assert kept == "R"
    assert work["compose_backward"].macs == products.cl_backward_plan(i, a, c, o, t, kept).cost
    composed = o * i * t + o
    assert work["compose_forward"].bytes == 4 * (params + composed)
    assert work["compose_backward"].bytes == 4 * (composed + 2 * params)
    assert work["optimizer"].bytes == 5 * 4 * (params - sum(p.numel() for p in compact.parameters()))
    floors = roofline.floor_ms(work, roofline.Rates(gemm_gflops=1.0, copy_gbps=1.0))
    assert floors["compose_forward"] == pytest.approx(max(2 * work["compose_forward"].macs, work["compose_forward"].bytes) / 1e6)
    assert floors["total"] == pytest.approx(sum(floors[p] for p in roofline.PHASES))


@pytest.mark.parametrize("strategy", ["cl", "ck"])
def test_composition_macs_follow_the_cost_model(strategy):
    """CL: the cheaper forward order + the chosen backward plan per group; CK: every fold forward,
    the partials again and two GEMMs per fold backward (counted by hand for a 5x5 -> two 3x3)."""
    from bench import step_profile
    from expandnets_cuda.compose import products
    unit = ec.FusedExpandConv2d(4, 6, 5, padding=2, strategy=strategy, rate=2, backend="torch")
    macs = step_profile.composition_macs(unit)
    if strategy == "cl":
        i, a, c, o, t = 4, 8, 12, 6, 25
        kept = products.cl_kept_intermediate(i, a, c, o, t)
        assert macs == min(products.cl_cost(i, a, c, o, t, 1)) + products.cl_backward_plan(i, a, c, o, t, kept).cost
    else:
        (o0, i0), (o1, _) = [tuple(layer.weight.shape[:2]) for layer in unit.layers]
        fold = o1 * 9 * o0 * i0 * 9  # the only fold: (o1, o0, 3x3) after (o0, i0, 3x3)
        assert macs == fold + 0 + 2 * fold


def test_scaling_points_sets_and_parsing():
    from bench import scaling
    full = scaling.FULL_POINTS
    assert len(full) == len(set(full)) == 2 * (6 + 2) + 3 * 2  # 32 px at batch 32 once per form
    assert {(p.batch, p.image_size) for p in full if p.model == "smallnet7" and p.form == "ck"} == {
        (16, 32), (32, 32), (64, 32), (128, 32), (256, 32), (512, 32), (32, 64), (32, 128)}
    assert {(p.model, p.batch, p.image_size) for p in full if p.imagenet} == {
        (m, b, 224) for m in ("mobilenet_v1", "mobilenet_v2", "shufflenet_v2_x0_5") for b in (8, 32)}
    assert set(scaling.QUICK_POINTS) < set(full) and all(p.batch == 8 for p in scaling.QUICK_POINTS if p.imagenet)
    assert scaling.select_points("smallnet7:ck:64:32, mobilenet_v1:cl:8:224") == [
        scaling.Point("smallnet7", "ck", 64, 32), scaling.Point("mobilenet_v1", "cl", 8, 224)]
    assert all(p.model == "smallnet7" and p.form == "cl" for p in scaling.select_points("full", ["smallnet7"], ["cl"]))
    for bad in ("smallnet7:cl:2", "smallnet3:cl:2:32", "mobilenet_v1:ck:8:224"):
        with pytest.raises(ValueError):
            scaling.parse_point(bad)
    with pytest.raises(SystemExit, match="--scaling-points"):
        main(["--plan", "--device", "cpu", "--scaling-points", "most"])


@pytest.mark.parametrize("point", [("smallnet7", "ck", 2, 48), ("shufflenet_v2_x0_5", "cl", 1, 224)])
def test_scaling_variants_are_one_function_at_the_point_size(point):
    from bench import scaling
    point = scaling.Point(*point)
    compact, fused, unfused, collapse = scaling.scaling_variants(point, torch.device("cpu"), backend="torch")
    classes = 1000 if point.imagenet else 10
    for v in (compact, fused, unfused, collapse):
        assert v.x.shape == (point.batch, 3, point.image_size, point.image_size) and int(v.y.max()) < classes
    assert [v.variant for v in (compact, fused, unfused, collapse)] == list(scaling.VARIANTS)
    assert fused.params == unfused.params > compact.params
    if not point.imagenet:  # no dropout: the three expanded forms compute the same outputs
        with torch.no_grad():
            outputs = [v.model(fused.x) for v in (fused, unfused, collapse)]
        assert outputs[0].shape == (point.batch, classes)
        for other in outputs[1:]:
            assert torch.allclose(outputs[0], other, rtol=1e-4, atol=1e-4)


def test_scaling_section_end_to_end(tmp_path, capsys):
    import math
    out = tmp_path / "scaling.json"
    argv = ["--device", "cpu", "--skip-layers", "--skip-network", "--skip-nonlinear", "--min-run-time", "0.01",
            "--rounds", "2", "--scaling-points", "smallnet7:cl:2:32,smallnet7:cl:4:32,smallnet7:ck:2:32",
            "--no-progress", "--out", str(out)]
    record = main(argv)
    saved = json.loads(out.read_text())
    rows = saved["scaling"]
    assert rows == record["scaling"] and [(r["form"], r["batch"], r["image_size"]) for r in rows] == [
        ("cl", 2, 32), ("cl", 4, 32), ("ck", 2, 32)]
    for r in rows:
        for variant in ("compact", "fused", "unfused", "collapse"):
            assert r[f"{variant}_ms"] > 0 and len(r[f"{variant}_samples_ms"]) == 2
            assert r[f"{variant}_images_per_s"] == pytest.approx(r["batch"] / r[f"{variant}_ms"] * 1e3)
        for variant in ("fused", "unfused", "collapse"):
            ratio = r[f"{variant}_vs_compact"]
            assert math.isfinite(ratio) and ratio == pytest.approx(r[f"{variant}_ms"] / r["compact_ms"])
        assert r["fused_params"] == r["unfused_params"] > r["compact_params"] and r["rate"] == 4.0
        assert r["threads"] == torch.get_num_threads()
        if r["floor_ms"] is not None:  # bench/roofline.py implemented
            assert r["floor_vs_compact"] == pytest.approx((r["compact_ms"] + r["floor_ms"]) / r["compact_ms"])
            assert r["floor_ms"] > 0
    assert saved["config"]["scaling"] == ["smallnet7:cl:2:32", "smallnet7:cl:4:32", "smallnet7:ck:2:32"]
    printed = capsys.readouterr().out
    table = printed[printed.index("\nScaling"):].splitlines()
    assert table[2].split()[:4] == ["model", "form", "batch", "px"] and len(table) >= 6
    assert table[3].split()[:4] == ["smallnet7", "cl", "2", "32"]
    assert out.with_name(out.stem + "-scaling.png").stat().st_size > 1000


def test_skip_scaling_and_the_plan_counts_it(tmp_path, capsys):
    out = tmp_path / "none.json"
    record = main(["--device", "cpu", "--skip-layers", "--skip-network", "--skip-nonlinear", "--skip-scaling",
                   "--no-progress", "--out", str(out)])
    assert record["scaling"] == [] and json.loads(out.read_text())["scaling"] == []
    assert "Scaling" not in capsys.readouterr().out and not out.with_name(out.stem + "-scaling.png").exists()

    from bench import scaling
    base = ["--plan", "--device", "cpu", "--skip-layers", "--skip-network"]
    sections = {s["name"]: s for s in main(base + ["--scaling-points", "full"])["plan"]["sections"]}
    assert sections["scaling"]["comparisons"] == len(scaling.FULL_POINTS) == 22
    assert sections["scaling"]["variants"] == 4 * 22 and sections["scaling"]["seconds"] > 0
    small = main(base + ["--scaling-models", "smallnet7", "--strategies", "cl"])["plan"]["sections"]
    assert {s["name"]: s for s in small}["scaling"]["comparisons"] == len(
        [p for p in scaling.QUICK_POINTS if p.form == "cl" and not p.imagenet])
    assert "scaling" not in {s["name"] for s in main(base + ["--skip-scaling"])["plan"]["sections"]}


def test_scaling_table_and_plot_with_imagenet_points_and_no_floor(tmp_path):
    def row(model, form, batch, px, fused, floor=None):
        return {"model": model, "form": form, "rate": 4.0, "batch": batch, "image_size": px, "compact_ms": 10.0,
                "fused_ms": 10.0 * fused, "fused_vs_compact": fused, "unfused_vs_compact": 3.0,
                "collapse_vs_compact": 1.2, "floor_ms": floor, "floor_vs_compact": 1 + floor / 10 if floor else None,
                "compact_spread": 0.01, "fused_spread": 0.2, "unfused_spread": 0.0, "collapse_spread": 0.05}
    rows = [row("smallnet7", "cl", b, 32, 2.0 / b ** 0.2, 0.5) for b in (16, 32, 64)]
    rows += [row("smallnet7", "cl", 32, px, 1.5) for px in (64, 128)]
    rows += [row("mobilenet_v1", "cl", 8, 224, 1.02), row("shufflenet_v2_x0_5", "cl", 8, 224, 1.04, 0.1)]
    table = report.format_scaling_rows(rows).splitlines()
    # the last columns: floor/compact, spread, the paper's unfused/compact time (Table S10, r=4)
    assert len(table) == 1 + len(rows) and table[-2].split()[-3:] == ["-", "±20%!", "5.20"]
    assert table[1].split()[-3:] == ["1.05", "±20%!", "2.29"]  # floor/compact = (10 + 0.5) / 10
    kinds = [(kind, key) for kind, key, _ in report._scaling_panels(rows)]
    assert kinds == [("batch", "cl"), ("imagenet", 8), ("px", "cl")]
    assert report.plot_scaling(rows, tmp_path / "s.png", "t").stat().st_size > 1000


@pytest.mark.parametrize("b", [3, 5])
def test_every_fold_method_computes_the_fold_and_its_gradients(b):
    from bench.fold_methods import METHODS, bench_fold
    rows = bench_fold(8, 6, 4, b, min_run_time=0.01, rounds=2)
    assert [r["method"] for r in rows] == list(METHODS)
    errors = {r["method"]: r["error"] for r in rows}
    assert errors["library"] < 1e-5 and errors["peer"] < 1e-5  # float32 rounding of one contraction
    assert errors["toom-cook"] < 1e-3 and errors["fft"] < 1e-4  # the same fold, other rounding
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 for r in rows)


@pytest.mark.parametrize("form", ["cl", "cl+fc"])
def test_width_one_twin_makes_the_composition_calls_of_its_model(form):
    """At one channel every unit has the same shapes; the twin must still compose them in the
    calls its model makes (one per unit for SmallNet's unequal units), or it would time one
    batched call and undercount the per-operator cost."""
    from bench import step_profile
    from bench.network import Variant, build
    variant = Variant(build("smallnet7", form, 2.0, "torch"), form, 2.0, "fused", 2, torch.device("cpu"))
    variant.step()
    real = variant.model.__dict__["_network_composer"]
    twin = step_profile.width_one_twin(variant.model)
    calls = real.compose()
    real.clear()
    assert calls == len(real.units)  # SmallNet's units differ in shape: one call each
    assert twin.__dict__["_network_composer"].compose() == calls
    twin.__dict__["_network_composer"].clear()
    step_profile.composition_call(twin)()


@pytest.mark.skipif(not has_glibc(), reason="needs glibc (Linux): mallopt(3)")
def test_step_profile_retains_freed_memory_when_asked_and_records_it(tmp_path, capsys):
    from bench import step_profile
    from expandnets_cuda.train.cpu_memory import MAX_MMAP_THRESHOLD
    out = tmp_path / "profile.json"
    step_profile.main(["--model", "smallnet3", "--form", "cl", "--rate", "2", "--batch", "2", "--steps", "1",
                       "--rounds", "2", "--retain-freed-memory", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["environment"]["allocator"]["retain_freed_memory"] == MAX_MMAP_THRESHOLD
    assert saved["reports"][0]["allocator"]["retain_freed_memory"] == MAX_MMAP_THRESHOLD
    assert "freed memory retained" in capsys.readouterr().out
