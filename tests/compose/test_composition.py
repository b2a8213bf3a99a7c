"""The lean training step: the torch composer's own backward (every plan, float64 exact, double
backward), and nothing parameter-sized saved for backward beyond the composed weight."""
import pytest
import torch
from torch import nn

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.compose.ck import _ck_partials, compose_ck
from expandnets_cuda.compose.cl import compose_cl
from expandnets_cuda.compose.fc import compose_fc
from expandnets_cuda.compose import products
from helpers import assert_rel_close

F64 = torch.float64


def _cl_params(m, n, a, c, k, g, bias=True):
    w1 = torch.randn(a, m // g, 1, 1, dtype=F64, requires_grad=True)
    w2 = torch.randn(c, a // g, k, k, dtype=F64, requires_grad=True)
    w3 = torch.randn(n, c // g, 1, 1, dtype=F64, requires_grad=True)
    biases = [torch.randn(s, dtype=F64, requires_grad=True) for s in (a, c, n)] if bias else None
    return [w1, w2, w3], biases


def _grads_of_reference(weights, biases, groups, d_weight, d_bias):
    ref_w, ref_b = pr.contract_cl(weights, biases, groups)
    outputs, grads = [ref_w], [d_weight]
    if biases is not None:
        outputs.append(ref_b)
        grads.append(d_bias)
    return torch.autograd.grad(outputs, [*weights, *(biases or [])], grads)


# (m, n, a, c, k, g): few taps, >= 16 taps, a narrowing unit (o < i), grouped, depthwise, 1x1.
CL_SHAPES = [(3, 5, 6, 10, 3, 1), (3, 4, 6, 8, 5, 1), (8, 2, 16, 4, 3, 1), (4, 6, 8, 12, 3, 2),
             (6, 6, 24, 24, 3, 6), (4, 6, 8, 12, 1, 2)]


@pytest.mark.parametrize("shape", CL_SHAPES)
@pytest.mark.parametrize("plan_index", range(8))
@pytest.mark.parametrize("w2_format", [torch.contiguous_format, torch.channels_last])
def test_every_cl_backward_plan_matches_reference_gradients(shape, plan_index, w2_format):
    """Each plan in each ``cl_gemms`` layout: taps-last (k=5, contiguous W2), taps-major copied
    (k=3, contiguous) and taps-major as a view (channels-last W2)."""
    m, n, a, c, k, g = shape
    weights, _ = _cl_params(m, n, a, c, k, g, bias=False)
    weights[1] = weights[1].detach().contiguous(memory_format=w2_format).requires_grad_()
    plan = products.cl_backward_plans(m // g, a // g, c // g, n // g, k * k)[plan_index]
    d_weight = torch.randn(n, m // g, k, k, dtype=F64)
    w1, w2, w3 = weights
    views = (w1.reshape(g, a // g, m // g), w2.reshape(g, c // g, a // g, k * k), w3.reshape(g, n // g, c // g))
    got = products.cl_backward(*(v.detach() for v in views), d_weight.reshape(g, n // g, m // g, k * k),
                               (True, True, True), plan)
    expected = _grads_of_reference(weights, None, g, d_weight, None)
    for name, mine, ref, view in zip(("w1", "w2", "w3"), got, expected, views):
        assert_rel_close(mine.reshape(ref.shape), ref, 1e-12, f"plan {plan} grad {name}")


@pytest.mark.parametrize("shape", CL_SHAPES)
@pytest.mark.parametrize("plan_index", range(8))
@pytest.mark.parametrize("w2_format", [torch.contiguous_format, torch.channels_last])
def test_cl_backward_with_the_kept_intermediate_and_a_rank_one_term(shape, plan_index, w2_format):
    """The intermediate ``cl_forward`` made (P or R, in its layout), handed to backward in place of
    forming it again, and ``dW2``'s rank-one term: the same gradients as the reference with
    ``u v^T`` added to every tap of ``dW2``, whichever plan reads what."""
    m, n, a, c, k, g = shape
    weights, _ = _cl_params(m, n, a, c, k, g, bias=False)
    weights[1] = weights[1].detach().contiguous(memory_format=w2_format).requires_grad_()
    d_weight = torch.randn(n, m // g, k, k, dtype=F64)
    w1, w2, w3 = (w.detach() for w in weights)
    views = (w1.reshape(g, a // g, m // g), w2.reshape(g, c // g, a // g, k * k), w3.reshape(g, n // g, c // g))
    _, name, intermediate = products.cl_forward(*views)
    plan = products.cl_backward_plans(m // g, a // g, c // g, n // g, k * k, kept=name)[plan_index]
    u, v = torch.randn(g, c // g, dtype=F64), torch.randn(g, a // g, dtype=F64)
    got = products.cl_backward(*views, d_weight.reshape(g, n // g, m // g, k * k), (True, True, True), plan,
                               dw2_rank_one=(u, v), kept=(name, intermediate))
    expected = list(_grads_of_reference(weights, None, g, d_weight, None))
    expected[1] = expected[1] + (u.unsqueeze(2) * v.unsqueeze(1)).reshape(c, a // g, 1, 1)
    for label, mine, ref in zip(("w1", "w2", "w3"), got, expected):
        assert_rel_close(mine.reshape(ref.shape), ref, 1e-12, f"plan {plan}, kept {name}: grad {label}")


def test_only_small_intermediates_are_kept():
    """Kept when the backward plan reads it and it is small; a large one is formed again."""
    assert products.cl_kept_intermediate(4, 8, 12, 6, 9) == "R"  # c*t*i = 432 values
    cap = products.KEEP_INTERMEDIATE_MAX_ELEMENTS
    # SmallNet k=7's last CL unit at r=4: R = 256*49*32 values, over the cap.
    assert 256 * 49 * 32 > cap and products.cl_kept_intermediate(32, 128, 256, 64, 49) is None
    assert products.cl_kept_intermediate(256, 1024, 256, 64, 1) == "P"  # its FC classifier: P = 64 x 1024


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("dims", [(5, 8, 12, 3), (9, 20, 6, 4), (16, 4, 24, 7)])
def test_compose_fc_matches_the_cl_path(dims, keep, bias, monkeypatch):
    """The 2-D FC Function against FC as CL with one group and one tap (``fc_through_cl``), values
    and gradients of every parameter, with the intermediate kept or formed again in backward."""
    from expandnets_cuda.compose.fc import fc_through_cl
    if not keep:
        monkeypatch.setattr(products, "KEEP_INTERMEDIATE_MAX_ELEMENTS", 0)
    i, a, c, o = dims
    ws = [torch.randn(a, i, dtype=F64, requires_grad=True), torch.randn(c, a, dtype=F64, requires_grad=True),
          torch.randn(o, c, dtype=F64, requires_grad=True)]
    bs = [torch.randn(s, dtype=F64, requires_grad=True) for s in (a, c, o)] if bias else None
    d_weight, d_bias = torch.randn(o, i, dtype=F64), torch.randn(o, dtype=F64)
    results = []
    for compose in (compose_fc, lambda w, b: fc_through_cl(compose_cl, w, b)):
        weight, b = compose(ws, bs)
        outputs, grads = ([weight, b], [d_weight, d_bias]) if bias else ([weight], [d_weight])
        results.append([*outputs, *torch.autograd.grad(outputs, [*ws, *(bs or [])], grads)])
    for k, (mine, ref) in enumerate(zip(*results)):
        assert_rel_close(mine, ref, 1e-12, f"FC output/grad {k} (keep={keep}, bias={bias})")


@pytest.mark.parametrize("shape", CL_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_compose_cl_gradients_match_reference(shape, bias):
    m, n, a, c, k, g = shape
    weights, biases = _cl_params(m, n, a, c, k, g, bias)
    w1, w2, w3 = weights
    b1, b2, b3 = biases if bias else (None, None, None)
    weight, fused_bias = compose_cl(w1, b1, w2, b2, w3, b3, g)
    d_weight = torch.randn_like(weight)
    d_bias = torch.randn(n, dtype=F64) if bias else None
    outputs, grads = [weight], [d_weight]
    if bias:
        outputs.append(fused_bias)
        grads.append(d_bias)
    got = torch.autograd.grad(outputs, [*weights, *(biases or [])], grads)
    expected = _grads_of_reference(weights, biases, g, d_weight, d_bias)
    for index, (mine, ref) in enumerate(zip(got, expected)):
        assert_rel_close(mine, ref, 1e-12, f"compose_cl {shape} grad of input {index}")


@pytest.mark.parametrize("w2_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("k", [3, 5])
def test_w2_gradient_comes_in_the_parameters_layout(w2_format, k):
    """So AccumulateGrad takes it as it is (a copy of the largest gradient per step otherwise)."""
    weights, biases = _cl_params(4, 6, 8, 12, k, 1)
    w2 = weights[1] = weights[1].detach().contiguous(memory_format=w2_format).requires_grad_()
    weight, bias = compose_cl(weights[0], biases[0], w2, biases[1], weights[2], biases[2], 1)
    d2, = torch.autograd.grad([weight, bias], [w2], [torch.randn_like(weight), torch.randn_like(bias)])
    assert d2.stride() == w2.stride(), f"dW2 strides {d2.stride()} vs W2 {w2.stride()}"
    expected = _grads_of_reference(weights, biases, 1, *_seeded_grads(weight, bias))[1]
    got, = torch.autograd.grad(compose_cl(weights[0], biases[0], w2, biases[1], weights[2],
                                                      biases[2], 1), [w2], _seeded_grads(weight, bias))
    assert_rel_close(got, expected, 1e-12, f"dW2 with W2 in {w2_format}")


def _seeded_grads(weight, bias):
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(weight.shape, generator=generator, dtype=weight.dtype),
            torch.randn(bias.shape, generator=generator, dtype=bias.dtype)]


def test_compose_cl_gradients_only_where_asked():
    weights, biases = _cl_params(3, 5, 6, 10, 3, 1)
    weights[1].requires_grad_(False)
    w1, w2, w3 = weights
    weight, bias = compose_cl(w1, biases[0], w2, biases[1], w3, biases[2], 1)
    (weight.sum() + bias.sum()).backward()
    assert w2.grad is None and w1.grad is not None and w3.grad is not None and biases[0].grad is not None


# Two of the 3- and 4-layer stacks keep their partial kernels for backward; (2,8),(3,2),(9,3) and the
# last one hold more partial than weight elements, so their backward folds them again
# (products.ck_keeps_partials).
@pytest.mark.parametrize("layers", [[(5, 3), (7, 5)], [(5, 3), (7, 5), (2, 7)], [(2, 8), (3, 2), (9, 3)],
                                    [(6, 2), (9, 6), (3, 9), (4, 3)], [(8, 4), (8, 8), (8, 8), (6, 8)]])
@pytest.mark.parametrize("bias", [True, False])
def test_compose_ck_gradients_match_reference_both_fold_orders(layers, bias):
    weights = [torch.randn(o, i, 3, 3, dtype=F64, requires_grad=True) for o, i in layers]
    biases = [torch.randn(o, dtype=F64, requires_grad=True) for o, _ in layers] if bias else None
    kernel, fused_bias = compose_ck(weights, biases)
    ref_kernel, ref_bias = pr.contract_ck(weights, biases)
    assert_rel_close(kernel, ref_kernel, 1e-12, "CK kernel")
    d_kernel = torch.randn_like(kernel)
    outputs, refs, grads = [kernel], [ref_kernel], [d_kernel]
    if bias:
        assert_rel_close(fused_bias, ref_bias, 1e-12, "CK bias")
        d_bias = torch.randn_like(fused_bias)
        outputs, refs, grads = outputs + [fused_bias], refs + [ref_bias], grads + [d_bias]
    inputs = [*weights, *(biases or [])]
    for index, (mine, ref) in enumerate(zip(torch.autograd.grad(outputs, inputs, grads),
                                            torch.autograd.grad(refs, inputs, grads))):
        assert_rel_close(mine, ref, 1e-12, f"CK {layers} grad of input {index}")


def test_ck_partials_are_kept_exactly_when_no_larger_than_the_weights_and_the_cap():
    for layers, kept in [([(5, 3), (7, 5), (2, 7)], True), ([(2, 8), (3, 2), (9, 3)], False),
                         ([(6, 2), (9, 6), (3, 9), (4, 3)], True), ([(8, 4), (8, 8), (8, 8), (6, 8)], False),
                         ([(40, 2), (6, 40), (50, 6), (2, 50)], True)]:
        weights = [torch.randn(o, i, 3, 3) for o, i in layers]
        left_first = products.ck_folds_left_first(weights)
        partial = _ck_partials(weights, left_first)
        numels = [partial[j].numel() for j in range(1, len(weights) - 1)]
        assert products.ck_partial_numels([(o, i, 3) for o, i in layers], left_first) == numels
        assert products.ck_keeps_partials([w.shape for w in weights]) is kept
        assert (sum(numels) <= sum(w.numel() for w in weights)) is kept
    big = [(256, 32), (512, 256), (64, 512)]  # SmallNet k=7's last unit at r=8: 409,600 partial elements
    assert not products.ck_keeps_partials([(o, i, 3, 3) for o, i in big])  # over the cap, though under its weights
    assert products.ck_keeps_partials([(o, i, 3, 3) for o, i in [(128, 32), (256, 128), (64, 256)]])  # r=4: 204,800


def test_both_ck_fold_orders_are_exercised():
    def stack(layers):
        return [torch.empty(o, i, 3, 3) for o, i in layers]
    assert products.ck_folds_left_first(stack([(6, 2), (9, 6), (3, 9), (4, 3)]))
    assert not products.ck_folds_left_first(stack([(5, 3), (7, 5), (2, 7)]))
    assert not products.ck_folds_left_first(stack([(2, 8), (3, 2), (9, 3)]))


def test_double_backward_cl_ck_fc():
    weights, biases = _cl_params(3, 4, 6, 10, 3, 1)
    w1, w2, w3 = weights
    assert torch.autograd.gradgradcheck(
        lambda *t: compose_cl(t[0], t[3], t[1], t[4], t[2], t[5], 1), (*weights, *biases), fast_mode=True)
    ck = [torch.randn(o, i, 3, 3, dtype=F64, requires_grad=True) for o, i in [(4, 2), (5, 4), (3, 5)]]
    ck_b = [torch.randn(o, dtype=F64, requires_grad=True) for o in (4, 5, 3)]
    assert torch.autograd.gradgradcheck(lambda *t: compose_ck(list(t[:3]), list(t[3:])), (*ck, *ck_b),
                                        fast_mode=True)
    fc = [torch.randn(o, i, dtype=F64, requires_grad=True) for o, i in [(8, 5), (12, 8), (3, 12)]]
    fc_b = [torch.randn(o, dtype=F64, requires_grad=True) for o in (8, 12, 3)]
    assert torch.autograd.gradgradcheck(lambda *t: compose_fc(list(t[:3]), list(t[3:])), (*fc, *fc_b),
                                        fast_mode=True)


# --- memory: what autograd keeps between forward and backward ---------------------------------
def saved_non_parameter_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during ``model(x)`` that are not parameters
    (those exist whether or not anything is saved)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(storages.values())


def composed_bytes(model: nn.Module) -> int:
    """The composed weights, plus the partial kernels a CK unit keeps for backward where they are no
    larger than its weights (``products.ck_keeps_partials``) and the tap sums of ``W2`` a CL unit's
    biases fold through (``c*a``: 1/taps of ``W2``)."""
    total = 0
    for unit in model.modules():
        if isinstance(unit, (ec.FusedExpandConv2d, ec.FusedExpandLinear)):
            weight, bias = unit.composed_weight()
            total += weight.numel() * weight.element_size() + (bias.numel() * bias.element_size() if bias is not None else 0)
            total += kept_partial_bytes(unit) + ck_bias_bytes(unit) + cl_tap_sum_bytes(unit) + cl_kept_bytes(unit)
    return total


def cl_kept_bytes(unit: nn.Module) -> int:
    """The small intermediate (``P`` or ``R``) a CL/FC unit keeps from forward to backward
    (``products.cl_kept_intermediate``)."""
    if getattr(unit.spec, "strategy", "fc") == "ck":
        return 0
    w1, w2, w3 = (layer.weight for layer in unit.layers)
    g = getattr(unit.spec, "groups", 1)
    i, a, c, o, t = w1.shape[1], w1.shape[0] // g, w2.shape[0] // g, w3.shape[0] // g, w2[0, 0].numel()
    name = products.cl_kept_intermediate(i, a, c, o, t, g)
    if name is None:
        return 0
    return g * (o * a * t if name == "P" else c * t * i) * (8 if w2.dtype == torch.float64 else 4)


def cl_tap_sum_bytes(unit: nn.Module) -> int:
    w2 = unit.layers[1].weight
    if getattr(unit.spec, "strategy", "fc") != "cl" or unit.layers[0].bias is None or w2[0, 0].numel() == 1:
        return 0
    return w2.shape[0] * w2.shape[1] * (8 if w2.dtype == torch.float64 else 4)  # composed in float32 at least


def kept_partial_bytes(unit: nn.Module) -> int:
    if getattr(unit.spec, "strategy", "fc") != "ck":
        return 0
    weights = [layer.weight for layer in unit.layers]
    shapes = [(w.shape[0], w.shape[1], w.shape[2]) for w in weights]
    if not products.ck_keeps_partials(shapes):
        return 0
    numels = products.ck_partial_numels(shapes, products.ck_folds_left_first(weights))
    return sum(numels) * weights[0].element_size()


def ck_bias_bytes(unit: nn.Module) -> int:
    """The biases after each inner layer a CK unit keeps for its rank-one terms (vectors; the first
    is the parameter ``b_0`` itself)."""
    if getattr(unit.spec, "strategy", "fc") != "ck" or unit.layers[0].bias is None:
        return 0
    w = unit.layers[0].weight
    return sum(layer.weight.shape[0] for layer in unit.layers[1:-1]) * (8 if w.dtype == torch.float64 else 4)


def _small_net():
    return nn.Sequential(nn.Conv2d(3, 8, 7, padding=3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 7, padding=3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize("strategy", ["cl", "ck"])
@pytest.mark.parametrize("rate", [2, 4, 8])
def test_saved_memory_is_compact_plus_composed_weights(strategy, rate):
    torch.manual_seed(0)
    compact = _small_net()
    fused = ec.expand_model(compact, strategy, rate, fc=True, backend="torch")
    x = torch.randn(4, 3, 16, 16)
    budget = saved_non_parameter_bytes(compact, x) + composed_bytes(fused)
    saved = saved_non_parameter_bytes(fused, x)
    assert saved <= 1.05 * budget, f"{strategy} r={rate}: saved {saved} B > 1.05 x (compact + composed) {budget} B"


@pytest.mark.parametrize("strategy", ["cl", "ck"])
def test_a_fused_unit_saves_only_its_input_and_composed_weight(strategy):
    unit = ec.FusedExpandConv2d(6, 10, 5, padding=2, strategy=strategy, rate=4, backend="torch")
    x = torch.randn(2, 6, 9, 9)
    weight, _ = unit.composed_weight()
    expected = x.numel() * x.element_size() + weight.numel() * weight.element_size() + cl_tap_sum_bytes(unit) + cl_kept_bytes(unit)
    assert saved_non_parameter_bytes(unit, x) == expected


def test_triton_ck_uses_the_lean_function_and_matches_reference():
    pytest.importorskip("triton")
    info = ec.available_backends().get("triton")
    if info is None or not info.available:
        pytest.skip(f"triton backend unavailable: {getattr(info, 'reason', '')}")
    from helpers import compare_units, twin
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, 2, 3, 7, padding=3, strategy="ck", rate=2,
                     backend="triton", dtype=F64, device=device)
    x = torch.randn(1, 2, 5, 5, dtype=F64, device=device)
    compare_units(fast, ref, x, 1e-10, "triton CK")
    weight, _ = fast.composed_weight()
    expected = (x.numel() * x.element_size() + weight.numel() * weight.element_size() + kept_partial_bytes(fast)
                + ck_bias_bytes(fast))
    assert kept_partial_bytes(fast) > 0  # the one partial kernel (3 layers), no larger than the weights
    assert saved_non_parameter_bytes(fast, x) == expected


@pytest.mark.parametrize("later, earlier", [((5, 4, 3, 3), (4, 3, 5, 5)), ((7, 4, 5, 3), (4, 3, 3, 5)),
                                            ((2, 6, 3, 5), (6, 1, 3, 3)), ((33, 17, 3, 3), (17, 9, 3, 3))])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_onednn_fold_matches_the_float64_fold(later, earlier, dtype, tol, layout):
    """float32 / bfloat16 CPU folds run as one oneDNN convolution (backward's re-fold hands it
    channels-last weights): against the float64 GEMM fold of the same rounded values, in either layout."""
    if not products._onednn_folds(torch.empty(0, dtype=dtype)):
        pytest.skip("this torch has no oneDNN: its folds run the GEMM, tested in float64 below")
    torch.manual_seed(0)
    later, earlier = torch.randn(*later).to(dtype), torch.randn(*earlier).to(dtype)
    if layout == "channels_last":
        later, earlier = (t.contiguous(memory_format=torch.channels_last) for t in (later, earlier))
    kernel = products.fold_forward(later, earlier)
    assert kernel.dtype == dtype
    assert_rel_close(kernel, products.fold_forward(later.double(), earlier.double()), tol, f"{dtype} fold")


@pytest.mark.parametrize("later, earlier", [((5, 4, 3, 3), (4, 3, 5, 5)), ((5, 4, 5, 5), (4, 3, 3, 3)),
                                            ((2, 6, 3, 5), (6, 1, 3, 3))])
def test_cpu_block_add_folds_match_the_col2im_folds(later, earlier):
    """The CPU folds (taps-major block adds) against the col2im / im2col ones other devices run, and
    the transposed-convolution fold the CPU runs under torch.compile."""
    later, earlier = torch.randn(*later, dtype=F64), torch.randn(*earlier, dtype=F64)
    kernel = products.fold_forward(later, earlier)
    assert_rel_close(kernel, products._fold_forward_col2im(later, earlier), 1e-13, "fold")
    assert_rel_close(kernel, products._fold_forward_transposed_conv(later, earlier), 1e-13, "fold (compiled)")
    dk = torch.randn_like(kernel)
    for mine, theirs in zip(products.fold_backward(later, earlier, dk),
                            products._fold_backward_im2col(later, earlier, dk, True, True)):
        assert_rel_close(mine, theirs, 1e-13, "fold backward")
