"""The CK work list of the CUDA backend (csrc/expandnets/ck_worklist.h, ``Composer.ck_network``): the
folds of every CK unit at one fold level in one launch forward and two backward, against
``compose_ck`` per unit in float64 (outputs and the gradients of every weight and bias).

The layout tests run anywhere: the CUDA ops' schemas are registered in a test namespace with torch
stand-ins for the kernels and the fake implementations of ``ck_worklist_layout``, and the
``NetworkFolds`` that ``ck_worklist_layout.folds_network_of`` makes of them drives
``ck_network.compose_ck_network``, as ``CUDA_NETWORK_FOLDS`` does with the real ops. The kernel tests are
marked ``gpu`` and skip, with the reason, without CUDA or the built extension; the kernels
themselves also run on the CPU in tests/cuda_cpu/check_ck_worklist.cpp."""
import math

import pytest
import torch

from expandnets_cuda.compose import ck_network
from expandnets_cuda.compose.ck import compose_ck
from expandnets_cuda.kernels import cuda as cuda_backend
from expandnets_cuda.compose import products
from expandnets_cuda.kernels.cuda import ck_worklist_layout
from helpers import REL_TOL, assert_rel_close, capture_in_cuda_graph
from helpers import ck_unit_tensors as parameters, flat_composed as flat, random_ck_unit as make_unit

REASON = cuda_backend.unavailable_reason()

# Channels per layer (3x3 kernels): k = 5, 9, 7, 7, 5, depths 2 to 4, odd and unequal channels,
# both fold orders; the third unit is wider than one 32-wide tile.
UNITS = [(3, 2, 4), (1, 5, 2, 3, 6), (6, 2, 33, 7), (2, 6, 6, 1), (7, 7, 1)]
# Unequal taps: a 5x5 then a 1x3 (later taps < earlier) and a 1x1 then a 3x3 (later taps > earlier).
TAPS_UNITS = [((3, 4, 2), [(5, 5), (1, 3)]), ((2, 3, 5), [(1, 1), (3, 3)])]


def kernel_test(fn):
    return pytest.mark.gpu(pytest.mark.skipif(REASON is not None, reason=f"CUDA backend unavailable: {REASON}")(fn))


def make_units(bias, dtype=torch.float64, device="cpu"):
    units = [make_unit(c, bias, dtype=dtype, device=device) for c in UNITS]
    return units + [make_unit(c, bias, taps, dtype=dtype, device=device) for c, taps in TAPS_UNITS]


def as_float64(units):
    """Leaf float64 copies of the units' parameters: the reference runs in float64 whatever the dtype."""
    def leaf(t):
        return t.detach().double().requires_grad_()
    return [([leaf(w) for w in weights], None if biases is None else [leaf(b) for b in biases])
            for weights, biases in units]


def assert_matches_compose_ck(units, compose_network, tol):
    """``compose_network(units)`` against ``compose_ck`` per unit in float64: every output
    and the gradient of every parameter (relative error of the whole tensor at most ``tol``)."""
    got = compose_network(units)
    ref_units = as_float64(units)
    want = [compose_ck(weights, biases) for weights, biases in ref_units]
    assert all((b is None) == (biases is None) for (_, b), (_, biases) in zip(got, units))
    outs, refs = flat(got), flat(want)
    assert len(outs) == len(refs)
    for k, (out, ref) in enumerate(zip(outs, refs)):
        assert out.dtype == units[0][0][0].dtype, k
        assert_rel_close(out, ref, tol, f"output {k}")
    params, ref_params = parameters(units), parameters(ref_units)
    grads = [torch.randn_like(ref) for ref in refs]
    got_grads = torch.autograd.grad(outs, params, [g.to(out.dtype) for g, out in zip(grads, outs)])
    want_grads = torch.autograd.grad(refs, ref_params, grads)
    for k, (p, g, w) in enumerate(zip(params, got_grads, want_grads)):
        assert g.shape == p.shape and g.dtype == p.dtype, k
        assert_rel_close(g, w, tol, f"grad of parameter {k}")


# The CUDA ops' schemas (csrc/binding/ck_worklist.cpp) in a test namespace, implemented in torch on the CPU, with
# ck_worklist_layout's fakes: what the CUDA ops register, minus the kernels.
_TEST_LIB = torch.library.Library("expandnets_ck_worklist_test", "DEF")
_TEST_LIB.define("network_fold(Tensor[] later, Tensor[] earlier) -> Tensor")
_TEST_LIB.define("network_fold_backward(Tensor[] grad, Tensor[] later, Tensor[] earlier) -> (Tensor, Tensor)")


def _cpu_network_fold(laters, earliers):
    with torch.no_grad():
        return torch.cat([products.fold_forward(l, e).reshape(-1) for l, e in zip(laters, earliers)])


def _cpu_network_fold_backward(grads, laters, earliers):
    with torch.no_grad():
        pairs = [products.fold_backward(l, e, g) for g, l, e in zip(grads, laters, earliers)]
        return torch.cat([dl.reshape(-1) for dl, _ in pairs]), torch.cat([de.reshape(-1) for _, de in pairs])


_TEST_LIB.impl("network_fold", _cpu_network_fold, "CPU")
_TEST_LIB.impl("network_fold_backward", _cpu_network_fold_backward, "CPU")
torch.library.register_fake("expandnets_ck_worklist_test::network_fold", ck_worklist_layout.network_fold_fake,
                            lib=_TEST_LIB)
torch.library.register_fake("expandnets_ck_worklist_test::network_fold_backward",
                            ck_worklist_layout.network_fold_backward_fake, lib=_TEST_LIB)
TEST_FOLD = torch.ops.expandnets_ck_worklist_test.network_fold
TEST_FOLD_BACKWARD = torch.ops.expandnets_ck_worklist_test.network_fold_backward
TEST_NETWORK_FOLDS = ck_worklist_layout.folds_network_of(TEST_FOLD, TEST_FOLD_BACKWARD)


def fold_operands(n=4, dtype=torch.float64):
    """(laters, earliers, grads) of unequal folds: 3x3 on 5x5, 7x7 on 3x3, 1x3 on 3x1, odd channels."""
    shapes = [((3, 5, 3, 3), (5, 2, 5, 5)), ((4, 3, 7, 7), (3, 5, 3, 3)), ((1, 7, 1, 3), (7, 3, 3, 1)),
              ((2, 1, 3, 3), (1, 1, 3, 3))][:n]
    laters = [torch.randn(*l, dtype=dtype) for l, _ in shapes]
    earliers = [torch.randn(*e, dtype=dtype) for _, e in shapes]
    grads = [torch.randn(*ck_worklist_layout.folded_shape(l, e), dtype=dtype) for l, e in zip(laters, earliers)]
    return laters, earliers, grads


@pytest.mark.parametrize("bias", [True, False])
def test_layout_folds_network_compose_like_compose_ck(bias):
    units = make_units(bias)
    assert {products.ck_folds_left_first(weights) for weights, _ in units} == {True, False}
    assert_matches_compose_ck(units, lambda us: ck_network.compose_ck_network(us, TEST_NETWORK_FOLDS), 1e-10)


def test_layout_views_match_the_fold_products():
    laters, earliers, grads = fold_operands()
    pairs = list(zip(laters, earliers))
    for k, (got, (l, e)) in enumerate(zip(TEST_NETWORK_FOLDS.forward(pairs), pairs)):
        torch.testing.assert_close(got, products.fold_forward(l, e), rtol=1e-12, atol=1e-12, msg=str(k))
    for (dl, de), (l, e), g in zip(TEST_NETWORK_FOLDS.backward(pairs, grads), pairs, grads):
        want_l, want_e = products.fold_backward(l, e, g)
        assert dl.shape == l.shape and de.shape == e.shape
        torch.testing.assert_close(dl, want_l, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(de, want_e, rtol=1e-12, atol=1e-12)


def test_layout_fake_shapes_match_the_flat_results():
    laters, earliers, grads = fold_operands()
    k = TEST_FOLD(laters, earliers)
    d_later, d_earlier = TEST_FOLD_BACKWARD(grads, laters, earliers)
    metas = [[t.to("meta") for t in ts] for ts in (laters, earliers, grads)]
    fake = ck_worklist_layout.network_fold_fake(metas[0], metas[1])
    assert fake.shape == k.shape == (sum(math.prod(g.shape) for g in grads),) and fake.device.type == "meta"
    fake_l, fake_e = ck_worklist_layout.network_fold_backward_fake(metas[2], metas[0], metas[1])
    assert fake_l.shape == d_later.shape and fake_e.shape == d_earlier.shape


def test_registered_ops_pass_opcheck_on_cpu():
    laters, earliers, grads = fold_operands()
    torch.library.opcheck(TEST_FOLD, (laters, earliers))
    torch.library.opcheck(TEST_FOLD_BACKWARD, (grads, laters, earliers))


def test_split_views_one_buffer():
    buffer = torch.arange(10.0)
    a, b = ck_worklist_layout.split(buffer, [(2, 3), (4,)])
    assert a.shape == (2, 3) and b.tolist() == [6.0, 7.0, 8.0, 9.0] and a.data_ptr() == buffer.data_ptr()


def test_one_call_of_each_op_per_level():
    calls = []

    def counted(fn, name):
        def call(*args):
            calls.append(name)
            return fn(*args)
        return call
    folds = ck_worklist_layout.folds_network_of(counted(TEST_FOLD, "fwd"), counted(TEST_FOLD_BACKWARD, "bwd"))
    units = make_units(True)
    depth = max(len(weights) for weights, _ in units)
    outs = flat(ck_network.compose_ck_network(units, folds))
    assert calls == ["fwd"] * (depth - 1)
    torch.autograd.grad(outs, parameters(units), [torch.ones_like(o) for o in outs])
    assert calls == ["fwd"] * (depth - 1) + ["fwd"] * (depth - 2) + ["bwd"] * (depth - 1)


# ------------------------------------------------------------------------------ CUDA kernels
def _composer():
    composer = cuda_backend.load_composer()
    assert composer.ck_network is not None
    return composer


@kernel_test
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ck_network_matches_compose_ck(bias, dtype):
    composer = _composer()
    units = make_units(bias, dtype=dtype, device="cuda")
    assert_matches_compose_ck(units, composer.ck_network, REL_TOL[dtype])
    assert_matches_compose_ck(units, composer.ck_network, REL_TOL[dtype])  # the cached tables
    assert_matches_compose_ck(units[::-1], composer.ck_network, REL_TOL[dtype])  # other tables


@kernel_test
def test_ck_network_after_an_in_place_update():
    composer = _composer()
    units = make_units(True, device="cuda")
    composer.ck_network(units)
    with torch.no_grad():
        for t in parameters(units):
            t.mul_(0.5).add_(0.25)
    assert_matches_compose_ck(units, composer.ck_network, 1e-10)


def _ck_worklist_launches(composer, units):
    """The CK work-list kernels of one forward and backward after a warm-up, and whether any
    host-to-device copy ran."""
    def step():
        outs = flat(composer.ck_network(units))
        torch.autograd.grad(outs, parameters(units), [torch.ones_like(o) for o in outs])
    for _ in range(2):  # builds the tables; the second step meets the allocator's steady state
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return [n for n in names if "ck_worklist" in n], any("HtoD" in n for n in names)


@kernel_test
def test_ck_network_launches_do_not_grow_with_the_units():
    composer = _composer()
    few = [make_unit(c, True, device="cuda") for c in ((3, 2, 4), (1, 5, 2, 3))]
    many = [make_unit(c, True, device="cuda") for c in ((3, 2, 4), (1, 5, 2, 3), (6, 2, 3, 7), (2, 6, 6, 1),
                                                         (7, 7, 1), (2, 2, 2, 2))]
    depth = 3  # layers of the deepest unit in both lists
    launches_few, copies_few = _ck_worklist_launches(composer, few)
    launches_network, copies_network = _ck_worklist_launches(composer, many)
    # forward: depth - 1; backward: depth - 2 recomputed levels + 2 per level.
    assert len(launches_few) == len(launches_network) == (depth - 1) + (depth - 2) + 2 * (depth - 1), launches_network
    assert not copies_few and not copies_network


@kernel_test
def test_ck_network_forward_captures_in_a_cuda_graph():
    """Two-kernel units (every fold reads parameters only: the tables of the warm-up serve the
    capture; deeper units' partial kernels come from the graph's pool, whose tables the capture
    refuses to build)."""
    composer = _composer()
    units = [make_unit(c, True, device="cuda") for c in ((3, 2, 4), (7, 7, 1), (2, 33, 5))]
    # the warm-up builds the table outside the capture
    graph, captured = capture_in_cuda_graph(lambda: composer.ck_network(units), grad=False)
    with torch.no_grad():
        for t in parameters(units):
            t.mul_(-1.5)
    graph.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        for (k, b), (weights, biases) in zip(captured, units):
            k_ref, b_ref = compose_ck(weights, biases)
            torch.testing.assert_close(k, k_ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(b, b_ref, rtol=1e-10, atol=1e-10)


@kernel_test
def test_ck_network_ops_pass_opcheck():
    _composer()
    from expandnets_cuda.kernels.cuda import ck_worklist_ops
    laters, earliers, grads = (
        [t.to("cuda", torch.float32) for t in ts] for ts in fold_operands())
    fake_only = ("test_schema", "test_faketensor")
    torch.library.opcheck(ck_worklist_ops.ck_network_fold, (laters, earliers), test_utils=fake_only)
    torch.library.opcheck(ck_worklist_ops.ck_network_fold_backward, (grads, laters, earliers), test_utils=fake_only)


@kernel_test
def test_ck_network_rejects_cpu_tensors():
    composer = _composer()
    from expandnets_cuda.backends.registry import BackendUnavailableError
    with pytest.raises(BackendUnavailableError, match="CUDA tensors"):
        composer.ck_network([make_unit((1, 2, 1), True)])
