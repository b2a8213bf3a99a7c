"""The CK work list (``ck_network``): every CK unit of a network composed level by level, by one
fold call per level for all units, against ``compose_ck`` per unit in float64
(outputs and the gradient of every weight and bias).

The first tests run the torch reference folds (``TORCH_NETWORK_FOLDS``, no Triton). The rest run
the Triton work-list kernels, on a CPU under the Triton interpreter (TRITON_INTERPRET=1, set by
conftest.py): tiny channel counts, each launch a few dozen programs.
"""
import pytest
import torch

import expandnets_cuda as ec
from bench.launches import DispatchCounter
from expandnets_cuda.compose import ck_network
from expandnets_cuda.compose.ck import compose_ck
from expandnets_cuda.compose import products
from helpers import capture_in_cuda_graph, random_ck_unit, record_launches
from helpers import ck_unit_tensors as _parameters, flat_composed as _flat
from network_cases import NoHostSync, triton_added_launches

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_unit(channels, bias, taps=None, dtype=torch.float64):
    return random_ck_unit(channels, bias, taps, dtype, DEVICE)


def assert_matches_compose_ck(units, compose_network, tol=1e-12):
    got = compose_network(units)
    want = [compose_ck(weights, biases) for weights, biases in units]
    assert all((b is None) == (biases is None) for (_, b), (_, biases) in zip(got, units))
    outs, refs = _flat(got), _flat(want)
    for k, (out, ref) in enumerate(zip(outs, refs)):
        assert out.shape == ref.shape, k
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol, msg=lambda m: f"output {k}: {m}")
    params = _parameters(units)
    grads = [torch.randn_like(ref) for ref in refs]
    got_grads = torch.autograd.grad(outs, params, grads)
    want_grads = torch.autograd.grad(refs, params, grads)
    for k, (p, g, w) in enumerate(zip(params, got_grads, want_grads)):
        assert g.shape == p.shape, k
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=lambda m: f"grad of parameter {k}: {m}")


# k = 5, 9, 7, 7, 5: depths 2 to 4; odd and unequal channels; the last two fold right to left.
TORCH_UNITS = [(3, 2, 4), (1, 5, 2, 3, 6), (6, 2, 1, 7), (2, 6, 6, 1), (7, 7, 1)]


@pytest.mark.parametrize("bias", [True, False])
def test_torch_folds_network_match_compose_ck_per_unit(bias):
    units = [make_unit(channels, bias) for channels in TORCH_UNITS]
    orders = {products.ck_folds_left_first(weights) for weights, _ in units}
    assert orders == {True, False}  # both fold orders covered
    assert_matches_compose_ck(units, ck_network.compose_ck_network)


def test_torch_folds_network_with_unequal_taps_and_double_backward():
    units = [make_unit((2, 3, 1), True, taps=[(1, 2), (3, 1)]), make_unit((1, 2, 2, 2), True)]
    assert_matches_compose_ck(units, ck_network.compose_ck_network)
    small = [make_unit((1, 2, 1), True, taps=[(2, 1), (1, 2)])]
    params = _parameters(small)

    def composed(*flat):
        weights, biases = list(flat[:2]), list(flat[2:])
        return tuple(_flat(ck_network.compose_ck_network([(weights, biases)])))
    assert torch.autograd.gradgradcheck(composed, tuple(params))


def test_units_must_all_have_biases_or_none_and_two_kernels():
    with pytest.raises(ValueError, match="biases"):
        ck_network.compose_ck_network([make_unit((1, 2, 1), True), make_unit((1, 2, 1), False)])
    with pytest.raises(ValueError, match="two kernels"):
        ck_network.compose_ck_network([make_unit((1, 2), False)])
    assert ck_network.compose_ck_network([]) == []


def test_one_fold_call_per_level_whatever_the_number_of_units():
    calls = []

    def counted(fn, name):
        def call(*args):
            calls.append(name)
            return fn(*args)
        return call
    folds = ck_network.NetworkFolds(counted(ck_network.TORCH_NETWORK_FOLDS.forward, "fwd"),
                              counted(ck_network.TORCH_NETWORK_FOLDS.backward, "bwd"))
    for n in (2, 5):
        units = [make_unit(channels, True) for channels in TORCH_UNITS[:n]]
        depth = max(len(weights) for weights, _ in units)
        calls.clear()
        outs = _flat(ck_network.compose_ck_network(units, folds))
        assert calls == ["fwd"] * (depth - 1)
        torch.autograd.grad(outs, _parameters(units), [torch.ones_like(o) for o in outs])
        assert calls == ["fwd"] * (depth - 1) + ["fwd"] * (depth - 2) + ["bwd"] * (depth - 1)


# ------------------------------------------------------------------------------ Triton kernels
triton = pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
from tools import ck_worklist_gate  # noqa: E402
from expandnets_cuda.kernels.triton import ck_worklist_ops  # noqa: E402
from expandnets_cuda.kernels.triton import offsets  # noqa: E402
from expandnets_cuda.kernels.triton import load_composer  # noqa: E402

# k = 5 and 7 (depths 2 and 3), the second folds left to right, the third right to left.
TRITON_UNITS = [(3, 2, 4), (1, 2, 3, 2), (2, 3, 3, 1)]


@pytest.mark.parametrize("bias", [True, False])
def test_triton_ck_network_matches_the_torch_composer(bias):
    composer = load_composer()
    assert composer.ck_network is not None
    units = [make_unit(channels, bias) for channels in TRITON_UNITS]
    assert {products.ck_folds_left_first(weights) for weights, _ in units} == {True, False}
    assert_matches_compose_ck(units, composer.ck_network)


@pytest.fixture
def launches(monkeypatch):
    """Every launch of a CK work-list kernel, as (kernel name, WIDE)."""
    return record_launches(monkeypatch, ck_worklist_gate.GATE_SPECS)


# Unequal units of small kernels (the interpreter's grids stay small), depth 3 at most, each set
# with a depth-3 unit: the number of levels is the same, the number of units is not. (Layer
# index 1 mixes tap counts in both sets, index 2 in neither: the bias fold takes the same path.)
MANY = [((1, 2, 3, 1), [(1, 1), (2, 1), (1, 2)]), ((2, 1, 3), [(2, 2), (1, 1)]), ((3, 1, 2), [(1, 2), (1, 1)]),
        ((1, 1, 1, 2), [(2, 1), (1, 1), (2, 1)]), ((2, 3, 1), [(1, 1), (1, 1)]), ((1, 2, 2), [(2, 1), (1, 2)])]


@pytest.mark.parametrize("bias", [True, False])
def test_launches_do_not_grow_with_the_number_of_units(launches, bias):
    counts = []
    for n in (2, 6):
        units = [make_unit(channels, bias, taps) for channels, taps in MANY[:n]]
        # Warm-up: builds and caches the work lists, bias indices, tables; and the output gradients.
        grads = [torch.ones_like(o) for o in _flat(ck_worklist_ops.compose_ck_network(units))]
        launches.clear()
        with DispatchCounter() as ops:
            outs = _flat(ck_worklist_ops.compose_ck_network(units))
            torch.autograd.grad(outs, _parameters(units), grads)
        counts.append((sorted(launches), ops.ops.get("expandnets.triton_ck_network_fold", 0),
                       ops.ops.get("expandnets.triton_ck_network_fold_backward", 0), ops.total))
        assert_matches_compose_ck(units, ck_worklist_ops.compose_ck_network)
    (kernels2, fwd2, bwd2, total2), (kernels6, fwd6, bwd6, total6) = counts
    assert kernels2 == kernels6, (kernels2, kernels6)
    # Depth 3: forward 2 levels, backward 1 recomputed level + 2 levels of two kernels each.
    assert len(kernels2) == 2 + 1 + 2 * 2
    assert fwd2 == fwd6 == 3 and bwd2 == bwd6 == 2
    assert total2 == total6, f"data-moving ops per call: {total2} for 2 units, {total6} for 6"


def test_a_second_call_builds_nothing_and_needs_no_host_value(monkeypatch):
    units = [make_unit(channels, True, taps) for channels, taps in MANY[:3]]
    outs = _flat(ck_worklist_ops.compose_ck_network(units))
    grads = [torch.ones_like(o) for o in outs]
    torch.autograd.grad(outs, _parameters(units), grads)
    plans = dict(ck_network._BIAS_PLANS)

    def no_build(*args):
        raise AssertionError("the work list was built again")
    monkeypatch.setattr(ck_worklist_ops, "build_work_list", no_build)
    with NoHostSync():
        outs = _flat(ck_worklist_ops.compose_ck_network(units))
        torch.autograd.grad(outs, _parameters(units), grads)
    assert ck_network._BIAS_PLANS.keys() == plans.keys()
    assert all(ck_network._BIAS_PLANS[k] is p for k, p in plans.items())


def test_triton_ck_network_in_float32():
    units = [make_unit(channels, True, taps, dtype=torch.float32) for channels, taps in MANY[:3]]
    assert_matches_compose_ck(units, ck_worklist_ops.compose_ck_network, tol=1e-5)


def test_wide_offsets_give_the_same_result(monkeypatch, launches):
    monkeypatch.setattr(offsets, "WIDE_ELEMENTS", 1)
    units = [make_unit(channels, True, taps) for channels, taps in MANY[:2]]
    assert_matches_compose_ck(units, ck_worklist_ops.compose_ck_network)
    assert launches and all(wide for _, wide in launches)


def test_ops_pass_opcheck():
    laters = [torch.randn(2, 3, 2, 1, dtype=torch.float64), torch.randn(1, 2, 1, 2, dtype=torch.float64)]
    earliers = [torch.randn(3, 1, 1, 2, dtype=torch.float64), torch.randn(2, 3, 2, 1, dtype=torch.float64)]
    grads = [torch.randn(2, 1, 2, 3, dtype=torch.float64), torch.randn(1, 3, 2, 2, dtype=torch.float64)]
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(ck_worklist_ops.ck_network_fold, (laters, earliers), test_utils=utils)
    torch.library.opcheck(ck_worklist_ops.ck_network_fold_backward, (grads, laters, earliers), test_utils=utils)
    for (later, earlier), k in zip(zip(laters, earliers), ck_worklist_ops.fold_network(list(zip(laters, earliers)))):
        torch.testing.assert_close(k, products.fold_forward(later, earlier), rtol=1e-12, atol=1e-12)


def test_work_list_covers_every_tile_of_every_fold_once():
    import itertools
    shapes = ((70, 3, 100, 3, 3, 5, 5), (1, 40, 2, 1, 2, 3, 1))  # (O, C, I, A, A2, B, B2)
    work = ck_worklist_ops.build_work_list(shapes, torch.float32, torch.device("cpu"))
    for name, (taps, m, n) in {"fwd": ("K", "O", "I"), "bwd_later": ("A", "O", "C"),
                               "bwd_earlier": ("B", "C", "I")}.items():
        launch, want = work.launches[name], []
        for u, (O, C, I, A, A2, B, B2) in enumerate(shapes):
            size = dict(O=O, C=C, I=I, K=(A + B - 1) * (A2 + B2 - 1), A=A * A2, B=B * B2)
            tiles = [triton.cdiv(size[d], launch["B" + d]) for d in (m, n)]
            want += [(u, *rest) for rest in itertools.product(range(size[taps]), *map(range, tiles))]
        got = [tuple(row) for row in work.items[name].tolist()]
        assert sorted(got) == sorted(want), name
    assert work.units[:, :7].tolist() == [list(s) for s in shapes]
    assert work.units[1, 7] == 70 * 100 * 7 * 7  # K offset of fold 1


def test_gate_declares_every_launch_the_wrapper_can_make():
    for dtype in (torch.float32, torch.float64):
        for spec in ck_worklist_gate.GATE_SPECS:
            declared = set(spec.launches(spec.name, dtype))
            role = ck_worklist_gate._ROLE[spec.name]
            for dims in [(1, 1, 1), (3, 70, 17), (512, 512, 49)]:
                assert ck_worklist_ops.launches_for(*dims, dtype)[role] in declared


def test_the_sm90_gate_collects_the_ck_work_list_kernels():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[3] / "tools" / "triton_sm90_gate.py"
    spec = importlib.util.spec_from_file_location("triton_sm90_gate", path)
    gate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate)
    specs = gate.all_specs()
    names = {s.name for s in specs}
    assert set(ck_worklist_gate._ROLE) <= names
    assert not [k for k in gate.undeclared_kernels(specs) if "ck_worklist" in k]


def test_a_ck_network_adds_launches_per_level_not_per_unit_and_gradients_match():
    """Through ``network_composition`` (the Triton composer's ``ck_network``, torch convolutions):
    2 vs 4 CK units of 5x5 kernels add the same launches per step."""
    added, library = triton_added_launches("ck", (2, 4), 2, (5, 5), 1.5, "triton ck_network")
    assert added[0] == added[1] and library[0] == library[1] > 0, (added, library)


@pytest.mark.gpu
def test_ck_network_step_captures_in_a_cuda_graph():
    units = [make_unit(channels, True, dtype=torch.float32) for channels in TRITON_UNITS]
    params = _parameters(units)

    def step():
        outs = _flat(ck_worklist_ops.compose_ck_network(units))
        return torch.autograd.grad(sum(o.square().sum() for o in outs), params)

    graph, static_grads = capture_in_cuda_graph(step, warmups=2)  # compiles the kernels, caches the work lists and the address tables
    graph.replay()
    torch.cuda.synchronize()
    for g, want in zip(static_grads, step()):
        torch.testing.assert_close(g, want)


@pytest.mark.parametrize("bias", [True, False])
def test_compose_ck_network_compiles_without_a_graph_break(bias):
    """The bias plan reads no tensor value (its index widths come from the shapes). The second
    unit's kernel has one input channel: torch 2.11 lost its gradient (tests/nn/test_compile.py)."""
    ck_network._BIAS_PLANS.clear()
    units = [make_unit(channels, bias) for channels in TORCH_UNITS[:3]]
    compiled = torch.compile(ck_network.compose_ck_network, fullgraph=True, backend="aot_eager")
    assert_matches_compose_ck(units, compiled)
