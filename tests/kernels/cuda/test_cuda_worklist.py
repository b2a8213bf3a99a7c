"""The work-list composition of the CUDA backend (csrc/expandnets/worklist.h, ``Composer.cl_network``):
many CL/FC units of unequal shapes composed by a fixed number of launches, against the torch
composer (``expandnets_cuda.compose.composition.compose_cl``) in float64, outputs and the gradients of
every input.

The layout tests run anywhere: they drive ``worklist_layout.compose_units`` (canonical shapes,
flat results split into per-unit views, fake shapes) with a pure-torch stand-in for the op. The
kernel tests are marked ``gpu`` and skip, with the reason, without CUDA or the built extension;
the kernels themselves also run on the CPU in tests/cuda_cpu/check_worklist.cpp."""
import pytest
import torch

from expandnets_cuda.compose.cl import compose_cl
from expandnets_cuda.kernels import cuda as cuda_backend
from expandnets_cuda.kernels.cuda import worklist_layout
from helpers import capture_in_cuda_graph, random_cl_unit
from helpers import cl_unit_tensors as inputs_of

REASON = cuda_backend.unavailable_reason()

# (groups, a, i, c, o, kh, kw): unequal units, grouped, several taps, FC as 1x1, wider than a tile.
UNITS = [
    (1, 6, 3, 10, 5, 3, 3),
    (2, 3, 2, 5, 3, 3, 2),
    (1, 40, 3, 20, 17, 1, 1),   # FC
    (2, 37, 35, 66, 33, 1, 2),  # more than one 32-wide tile along every dimension
    (4, 2, 1, 2, 1, 3, 3),      # depthwise
]


def kernel_test(fn):
    return pytest.mark.gpu(pytest.mark.skipif(REASON is not None, reason=f"CUDA backend unavailable: {REASON}")(fn))


def make_units(shapes, biases, dtype=torch.float64, device="cpu"):
    return [random_cl_unit(*shape, biases, dtype, device) for shape in shapes]


def torch_network(w1s, w2s, w3s, b1s, b2s, b3s):
    """The op's contract in torch: canonical lists in, (flat W, flat bias) out."""
    weights = [torch.einsum("goc,gcat,gai->goit", w3, w2, w1).reshape(-1) for w1, w2, w3 in zip(w1s, w2s, w3s)]
    biases = [(torch.einsum("goc,gc->go", w3, torch.einsum("gcat,ga->gc", w2, b1) + b2) + b3).reshape(-1)
              for w2, w3, b1, b2, b3 in zip(w2s, w3s, b1s, b2s, b3s)]
    return torch.cat(weights), torch.cat(biases) if biases else w2s[0].new_empty((0,))


# The CUDA ops' schemas (csrc/binding/worklist.cpp) in a test namespace, implemented in torch on the CPU, with
# worklist_layout's fake implementations and autograd: what the CUDA ops register, minus the kernels.
_TEST_LIB = torch.library.Library("expandnets_worklist_test", "DEF")
_TEST_LIB.define("network(Tensor[] w1, Tensor[] w2, Tensor[] w3, Tensor[] b1, Tensor[] b2, Tensor[] b3) -> (Tensor, Tensor)")
_TEST_LIB.define("network_backward(Tensor grad_w, Tensor grad_bias, Tensor[] w1, Tensor[] w2, Tensor[] w3, "
                 "Tensor[] b1, Tensor[] b2, Tensor[] b3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")


def _cpu_network(*lists):
    with torch.no_grad():
        return torch_network(*lists)


def _cpu_network_backward(grad_w, grad_bias, w1s, w2s, w3s, b1s, b2s, b3s):
    """The kernels' backward formulas (worklist.h) in torch, flat results per kind."""
    dw1, dw2, dw3, db1, db2 = [], [], [], [], []
    w_at = b_at = 0
    for k, (w1, w2, w3) in enumerate(zip(w1s, w2s, w3s)):
        g, o, c = w3.shape
        n = worklist_layout.weight_numel(w1, w2, w3)
        dw = grad_w[w_at:w_at + n].view(g, o, w1.shape[2], w2.shape[3])
        w_at += n
        d_w2 = torch.einsum("goc,goit,gai->gcat", w3, dw, w1)
        d_w3 = torch.einsum("goit,gai,gcat->goc", dw, w1, w2)
        if b1s:
            gb = grad_bias[b_at:b_at + g * o].view(g, o)
            b_at += g * o
            inner = torch.einsum("gcat,ga->gc", w2, b1s[k]) + b2s[k]
            d_inner = torch.einsum("goc,go->gc", w3, gb)
            d_w2 = d_w2 + torch.einsum("gc,ga->gca", d_inner, b1s[k]).unsqueeze(3)
            d_w3 = d_w3 + torch.einsum("go,gc->goc", gb, inner)
            db1.append(torch.einsum("gcat,gc->ga", w2, d_inner).reshape(-1))
            db2.append(d_inner.reshape(-1))
        dw1.append(torch.einsum("gcat,goc,goit->gai", w2, w3, dw).reshape(-1))
        dw2.append(d_w2.reshape(-1))
        dw3.append(d_w3.reshape(-1))
    return tuple(torch.cat(parts) if parts else grad_w.new_empty((0,)) for parts in (dw1, dw2, dw3, db1, db2))


_TEST_LIB.impl("network", _cpu_network, "CPU")
_TEST_LIB.impl("network_backward", _cpu_network_backward, "CPU")
torch.library.register_fake("expandnets_worklist_test::network", worklist_layout.network_fake, lib=_TEST_LIB)
torch.library.register_fake("expandnets_worklist_test::network_backward", worklist_layout.network_backward_fake,
                            lib=_TEST_LIB)
_setup, _backward = worklist_layout.autograd_of(torch.ops.expandnets_worklist_test.network_backward)
torch.library.register_autograd("expandnets_worklist_test::network", _backward, setup_context=_setup, lib=_TEST_LIB)
TEST_NETWORK = torch.ops.expandnets_worklist_test.network


def canonical_lists(units):
    canon = [worklist_layout.canonical_unit(*unit) for unit in units]
    biases = canon[0].b1 is not None
    return [[getattr(u, name) for u in canon] if biases or name[0] == "w" else []
            for name in ("w1", "w2", "w3", "b1", "b2", "b3")]


def compare_with_compose_cl(composed_network, units, rtol):
    """Outputs and the gradients of every input of cl_network's results against compose_cl's."""
    expected = [compose_cl(*unit) for unit in units]
    assert len(composed_network) == len(expected)
    outs, refs, grads = [], [], []
    for (w, b), (w_ref, b_ref) in zip(composed_network, expected):
        assert w.shape == w_ref.shape and (b is None) == (b_ref is None)
        torch.testing.assert_close(w, w_ref, rtol=rtol, atol=rtol)
        pairs = [(w, w_ref)] + ([(b, b_ref)] if b is not None else [])
        for got, want in pairs:
            torch.testing.assert_close(got, want, rtol=rtol, atol=rtol)
            grads.append(torch.randn_like(want))
            outs.append(got)
            refs.append(want)
    inputs = inputs_of(units)
    got = torch.autograd.grad(outs, inputs, grads)
    want = torch.autograd.grad(refs, inputs, grads)
    for k, (g, r) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol, msg=lambda m: f"gradient of input {k}: {m}")


@pytest.mark.parametrize("biases", [True, False])
def test_layout_composes_unequal_units_like_compose_cl(biases):
    units = make_units(UNITS, biases)
    compare_with_compose_cl(worklist_layout.compose_units(units, torch_network), units, 1e-10)


@pytest.mark.parametrize("biases", [True, False])
def test_registered_op_fake_and_autograd_on_cpu(biases):
    """The CUDA ops' schema with the fake impls and autograd of worklist_layout, their kernels
    replaced by torch: gradients of every input equal compose_cl's, and opcheck passes."""
    units = make_units(UNITS, biases)
    compare_with_compose_cl(worklist_layout.compose_units(units, TEST_NETWORK), units, 1e-10)
    lists = canonical_lists(units)
    torch.library.opcheck(TEST_NETWORK, tuple(lists))
    flat_w, flat_b = TEST_NETWORK(*lists)
    detached = [[t.detach() for t in ts] for ts in lists]
    torch.library.opcheck(torch.ops.expandnets_worklist_test.network_backward,
                          (torch.randn_like(flat_w), torch.randn_like(flat_b), *detached),
                          test_utils=("test_schema", "test_faketensor"))


def test_registered_op_compiles_fullgraph_on_cpu():
    units = make_units(UNITS[:3], True)
    groups = [unit[6] for unit in units]

    def loss(*tensors):
        rebuilt = [(*tensors[6 * k:6 * k + 6], g) for k, g in enumerate(groups)]
        return sum(w.square().sum() + b.sum() for w, b in worklist_layout.compose_units(rebuilt, TEST_NETWORK))

    torch._dynamo.reset()
    inputs = inputs_of(units)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), loss(*inputs), rtol=1e-10, atol=1e-10)
    for got, want in zip(torch.autograd.grad(compiled(*inputs), inputs), torch.autograd.grad(loss(*inputs), inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_layout_fake_shapes_match_the_flat_results():
    units = make_units(UNITS, True)
    lists = canonical_lists(units)
    flat_w, flat_b = torch_network(*lists)
    metas = [[t.detach().to("meta") for t in tensors] for tensors in lists]
    fake_w, fake_b = worklist_layout.network_fake(*metas)
    assert fake_w.shape == flat_w.shape and fake_b.shape == flat_b.shape and fake_w.device.type == "meta"
    grads = worklist_layout.network_backward_fake(fake_w, fake_b, *metas)
    assert [g.numel() for g in grads] == [sum(t.numel() for t in ts) for ts in lists[:5]]
    no_bias = worklist_layout.network_fake(*metas[:3], [], [], [])
    assert no_bias[1].shape == (0,)


def test_layout_rejects_mixed_biases_and_handles_no_units():
    with_bias, without = make_units(UNITS[:1], True), make_units(UNITS[1:2], False)
    with pytest.raises(ValueError, match="all have biases"):
        worklist_layout.compose_units(with_bias + without, torch_network)
    assert worklist_layout.compose_units([], torch_network) == []


def test_split_like_views_one_buffer():
    flat = torch.arange(10.0)
    a, b = worklist_layout.split_like(flat, [torch.empty(2, 3), torch.empty(4)])
    assert a.shape == (2, 3) and b.tolist() == [6.0, 7.0, 8.0, 9.0]
    assert a.data_ptr() == flat.data_ptr()


def _composer():
    composer = cuda_backend.load_composer()
    assert composer.cl_network is not None
    return composer


@kernel_test
@pytest.mark.parametrize("biases", [True, False])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_cl_network_matches_compose_cl(biases, dtype, rtol):
    composer = _composer()
    units = make_units(UNITS, biases, dtype=dtype, device="cuda")
    compare_with_compose_cl(composer.cl_network(units), units, rtol)
    # The same units again (the cached table), and in another order (another table).
    compare_with_compose_cl(composer.cl_network(units), units, rtol)
    compare_with_compose_cl(composer.cl_network(units[::-1]), units[::-1], rtol)


@kernel_test
def test_cl_network_after_an_in_place_update():
    """Parameters updated in place keep their pointers: the cached table reads the new values."""
    composer = _composer()
    units = make_units(UNITS, True, device="cuda")
    composer.cl_network(units)
    with torch.no_grad():
        for t in inputs_of(units):
            t.mul_(0.5).add_(0.25)
    compare_with_compose_cl(composer.cl_network(units), units, 1e-10)


@kernel_test
def test_cl_network_launches_a_fixed_number_of_kernels():
    composer = _composer()
    units = make_units(UNITS, True, device="cuda")
    composer.cl_network(units)  # builds the table
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        outs = composer.cl_network(units)
        torch.autograd.grad([t for pair in outs for t in pair], inputs_of(units),
                            [torch.ones_like(t) for pair in outs for t in pair])
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    worklist = [n for n in names if "cl_worklist" in n]
    assert len(worklist) == 2 + 5, worklist
    assert not any("HtoD" in n for n in names), names


@kernel_test
def test_cl_network_forward_captures_in_a_cuda_graph():
    composer = _composer()
    units = make_units(UNITS, True, device="cuda")
    # the warm-up builds the table outside the capture
    graph, captured = capture_in_cuda_graph(lambda: composer.cl_network(units), grad=False)
    with torch.no_grad():
        for t in inputs_of(units):
            t.mul_(-1.5)
    graph.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        for (w, b), unit in zip(captured, units):
            w_ref, b_ref = compose_cl(*unit)
            torch.testing.assert_close(w, w_ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(b, b_ref, rtol=1e-10, atol=1e-10)


@kernel_test
def test_cl_network_ops_pass_opcheck_and_compile():
    _composer()
    from expandnets_cuda.kernels.cuda import worklist_ops
    units = make_units(UNITS[:3], True, dtype=torch.float32, device="cuda")
    lists = canonical_lists(units)
    fake_only = ("test_schema", "test_faketensor")
    torch.library.opcheck(worklist_ops.cl_network, tuple(lists))
    flat_w, flat_b = worklist_ops.cl_network(*lists)
    detached = [[t.detach() for t in ts] for ts in lists]
    torch.library.opcheck(worklist_ops.cl_network_backward, (torch.randn_like(flat_w), torch.randn_like(flat_b),
                                                          *detached), test_utils=fake_only)
    torch._dynamo.reset()
    groups = [unit[6] for unit in units]

    def loss(*tensors):
        rebuilt = [(*tensors[6 * k:6 * k + 6], g) for k, g in enumerate(groups)]
        return sum(w.square().sum() + b.sum() for w, b in worklist_ops.compose_cl_network(rebuilt))

    inputs = inputs_of(units)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), loss(*inputs), rtol=1e-5, atol=1e-4)
    got = torch.autograd.grad(compiled(*inputs), inputs)
    want = torch.autograd.grad(loss(*inputs), inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
