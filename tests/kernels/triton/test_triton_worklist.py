"""The Triton work-list composition (``cl_network``): many CL/FC units of unequal shapes composed by
a fixed number of launches, against the torch composer in float64 (outputs and the gradient of
every parameter), launches independent of the number of units, and a second call that builds and
copies nothing (the work list and the address table are cached).

On a CPU the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set by conftest.py):
the shapes are tiny, each launch a few dozen programs.
"""
import itertools

import pytest
import torch

from bench.launches import DispatchCounter
from expandnets_cuda.compose.cl import compose_cl
from helpers import capture_in_cuda_graph, random_cl_unit, record_launches
from helpers import cl_unit_tensors as _parameters, flat_composed as _flat
from expandnets_cuda.compose.cl import cl_operands
from network_cases import NoHostSync

triton = pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
from tools import cl_worklist_gate  # noqa: E402
from expandnets_cuda.kernels.triton import cl_worklist_ops  # noqa: E402
from expandnets_cuda.kernels.triton import offsets  # noqa: E402
from expandnets_cuda.kernels.triton import load_composer  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (groups, a, i, c, o, kh, kw): dense 3x3; grouped, odd widths, kh != kw; depthwise-ish (i = o = 1
# per group); an FC as a 1x1 whose i and a span two tiles (float64 tiles: 32 wide, reductions 16).
SHAPES = [(1, 3, 2, 4, 3, 3, 3), (2, 2, 1, 3, 2, 3, 2), (3, 2, 1, 2, 1, 2, 1), (1, 20, 33, 6, 4, 1, 1)]


def make_unit(groups, a, i, c, o, kh, kw, bias, dtype=torch.float64):
    return random_cl_unit(groups, a, i, c, o, kh, kw, bias, dtype, DEVICE)


@pytest.mark.parametrize("bias", [True, False])
def test_cl_network_matches_the_torch_composer_with_every_gradient(bias):
    units = [make_unit(*shape, bias=bias) for shape in SHAPES]
    got = cl_worklist_ops.compose_cl_network(units)
    want = [compose_cl(*unit) for unit in units]
    assert all((b is None) != bias for _, b in got)
    outs, refs = _flat(got), _flat(want)
    for k, (out, ref) in enumerate(zip(outs, refs)):
        assert out.shape == ref.shape, k
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12, msg=lambda m: f"output {k}: {m}")
    params = _parameters(units)
    grads = [torch.randn_like(ref) for ref in refs]
    got_grads = torch.autograd.grad(outs, params, grads)
    want_grads = torch.autograd.grad(refs, params, grads)
    for k, (p, g, w) in enumerate(zip(params, got_grads, want_grads)):
        assert g.shape == p.shape
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"grad of parameter {k}: {m}")


def test_the_triton_composer_carries_cl_network_and_it_agrees_with_cl():
    composer = load_composer()
    assert composer.cl_network is not None
    units = [make_unit(*shape, bias=True) for shape in SHAPES[:2]]
    for (w, b), unit in zip(composer.cl_network(units), units):
        w_alone, b_alone = composer.cl(*unit)
        torch.testing.assert_close(w, w_alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, b_alone, rtol=1e-12, atol=1e-12)
    assert composer.cl_network([]) == []


def test_units_must_all_have_biases_or_none():
    with pytest.raises(ValueError, match="biases"):
        cl_worklist_ops.compose_cl_network([make_unit(*SHAPES[0], bias=True), make_unit(*SHAPES[1], bias=False)])


@pytest.fixture
def launches(monkeypatch):
    """Every launch of a work-list kernel, as (kernel name, WIDE)."""
    return record_launches(monkeypatch, cl_worklist_gate.GATE_SPECS)


# Unequal units, every one a single tile at most a few taps (the interpreter's grids stay small).
MANY = [(1, 2, 3, 2, 2, 1, 1), (2, 1, 2, 2, 1, 1, 2), (1, 3, 1, 2, 3, 2, 1), (3, 1, 1, 1, 1, 1, 1),
        (1, 4, 2, 3, 1, 1, 1), (1, 1, 5, 1, 2, 1, 3)]


@pytest.mark.parametrize("bias", [True, False])
def test_launches_do_not_grow_with_the_number_of_units(launches, bias):
    counts = []
    for n in (2, 6):
        units = [make_unit(*shape, bias=bias) for shape in MANY[:n]]
        # Warm-up: builds and caches the work list and table; and the output gradients to feed back.
        grads = [torch.ones_like(o) for o in _flat(cl_worklist_ops.compose_cl_network(units))]
        launches.clear()
        with DispatchCounter() as ops:
            torch.autograd.grad(_flat(cl_worklist_ops.compose_cl_network(units)), _parameters(units), grads)
        counts.append((sorted(launches), ops.ops.get("expandnets.triton_cl_network_compose", 0),
                       ops.ops.get("expandnets.triton_cl_network_compose_backward", 0), ops.total))
    (kernels2, fwd2, bwd2, total2), (kernels6, fwd6, bwd6, total6) = counts
    assert kernels2 == kernels6, (kernels2, kernels6)
    assert len(kernels2) == (6 if bias else 4)  # forward W (+ b), backward dW1, dW2, dW3 (+ db1/db2)
    assert fwd2 == fwd6 == 1 and bwd2 == bwd6 == 1
    assert total2 == total6, f"data-moving ops per call: {total2} for 2 units, {total6} for 6"


def test_a_second_call_builds_and_copies_nothing(monkeypatch):
    units = [make_unit(*shape, bias=True) for shape in MANY[:3]]
    outs = _flat(cl_worklist_ops.compose_cl_network(units))
    torch.autograd.grad(outs, _parameters(units), [torch.ones_like(o) for o in outs])
    tables = dict(cl_worklist_ops._TABLES)

    def no_build(*args):
        raise AssertionError("the work list was built again")
    monkeypatch.setattr(cl_worklist_ops, "build_work_list", no_build)
    grads = [torch.ones_like(o) for o in outs]
    with NoHostSync():  # nor does it ask the device for a value
        outs = _flat(cl_worklist_ops.compose_cl_network(units))
        torch.autograd.grad(outs, _parameters(units), grads)
    assert cl_worklist_ops._TABLES.keys() == tables.keys()
    assert all(cl_worklist_ops._TABLES[k] is t for k, t in tables.items())


def test_wide_offsets_give_the_same_result(monkeypatch, launches):
    monkeypatch.setattr(offsets, "WIDE_ELEMENTS", 1)
    units = [make_unit(*shape, bias=True) for shape in MANY[:3]]
    outs = _flat(cl_worklist_ops.compose_cl_network(units))
    refs = _flat([compose_cl(*unit) for unit in units])
    params = _parameters(units)
    grads = [torch.randn_like(r) for r in refs]
    got = torch.autograd.grad(outs, params, grads)
    want = torch.autograd.grad(refs, params, grads)
    for out, ref in zip(outs + list(got), refs + list(want)):
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert launches and all(wide for _, wide in launches)


def test_ops_pass_opcheck():
    units = [make_unit(*shape, bias=True) for shape in MANY[:2]]
    canon = [cl_operands(*unit) for unit in units]
    args = tuple([c[k].detach() for c in canon] for k in range(6))
    torch.library.opcheck(cl_worklist_ops.cl_network_compose, args, test_utils=("test_schema", "test_faketensor"))


def test_gate_declares_every_launch_the_wrapper_can_make():
    for dtype in (torch.float32, torch.float64):
        for spec in cl_worklist_gate.GATE_SPECS:
            declared = set(spec.launches(spec.name, dtype))
            role = cl_worklist_gate._ROLE[spec.name]
            for dims in [(1, 1, 1, 1, 1), (3, 70, 17, 200, 9), (512, 512, 512, 512, 49)]:
                assert cl_worklist_ops.launches_for(*dims, dtype)[role] in declared


@pytest.mark.gpu
def test_cl_network_step_captures_in_a_cuda_graph():
    units = [make_unit(*shape, bias=True, dtype=torch.float32) for shape in SHAPES]
    params = _parameters(units)

    def step():
        outs = _flat(cl_worklist_ops.compose_cl_network(units))
        return torch.autograd.grad(sum(o.square().sum() for o in outs), params)

    graph, static_grads = capture_in_cuda_graph(step, warmups=2)  # compiles the kernels, caches the work list and the address table
    graph.replay()
    torch.cuda.synchronize()
    for g, want in zip(static_grads, step()):
        torch.testing.assert_close(g, want)


def test_a_capture_with_moved_inputs_fills_its_table_on_the_device(monkeypatch):
    units = [make_unit(*shape, bias=True) for shape in MANY[:2]]
    outs = _flat(cl_worklist_ops.compose_cl_network(units))  # warm-up: the work list
    monkeypatch.setattr(cl_worklist_ops, "_capturing", lambda device: True)
    monkeypatch.setattr(cl_worklist_ops, "_CAPTURED_TABLES", {})
    monkeypatch.setattr(cl_worklist_ops.torch, "tensor", None)  # no host-built table now
    moved = [tuple(t.detach().clone().requires_grad_(True) if torch.is_tensor(t) else t for t in unit)
             for unit in units]
    for out, again in zip(outs, _flat(cl_worklist_ops.compose_cl_network(moved))):
        torch.testing.assert_close(again, out, rtol=0, atol=0)
    assert len(cl_worklist_ops._CAPTURED_TABLES) == 1


def test_work_list_covers_every_tile_of_every_unit_once():
    shapes = ((1, 40, 70, 3, 100, 9), (4, 2, 1, 2, 1, 6), (2, 17, 33, 65, 5, 1))  # (G, A, I, C, O, T)
    work = cl_worklist_ops.build_work_list(shapes, torch.float32, torch.device("cpu"))
    extents = {"fwd": ("GT", "O", "I"), "bias": ("G", "O", None), "bwd_w1": ("G", "A", "I"),
               "bwd_w2": ("GT", "C", "A"), "bwd_w3": ("G", "O", "C"), "bias_bwd": ("G", "A", None)}
    edges = {"O": "BO", "I": "BI", "A": "BA", "C": "BC"}
    for name, (outer, m, n) in extents.items():
        launch = work.launches[name]
        want = []
        for u, (G, A, I, C, O, T) in enumerate(shapes):
            size = dict(G=G, GT=G * T, A=A, I=I, C=C, O=O)
            tiles = [triton.cdiv(size[d], launch[edges[d]]) if d else 1 for d in (m, n)]
            want += [(u, *rest) for rest in itertools.product(range(size[outer]), *map(range, tiles))]
        got = [tuple(row) for row in work.items[name].tolist()]
        assert sorted(got) == sorted(want), name
    assert work.units[:, :6].tolist() == [list(s) for s in shapes]
    assert work.units[1, 6] == shapes[0][0] * shapes[0][4] * shapes[0][2] * shapes[0][5]  # W offset of unit 1


def test_cl_network_compiles_whole_graph_with_its_gradients():
    units = [make_unit(*shape, bias=True) for shape in MANY[:3]]
    params = _parameters(units)

    def loss(*flat_params):
        it = iter(flat_params)
        rebuilt = [tuple(next(it) if torch.is_tensor(t) else t for t in unit) for unit in units]
        return sum(o.square().sum() for o in _flat(cl_worklist_ops.compose_cl_network(rebuilt)))

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = compiled(*params)
    want = loss(*params)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
