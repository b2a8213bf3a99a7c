"""FusedExpandConv2d on every available backend against python_ref.ExpandedConv2d: outputs and the
gradients of the input and of every expanded parameter, over awkward shapes and layouts."""
import pytest
import torch

import expandnets_cuda as ec
import python_ref as pr
from conv_cases import CASES
from helpers import REL_TOL, assert_rel_close, compare_units, native_backends, twin

BACKENDS = native_backends("cpu")
CUDA_BACKENDS = native_backends("cuda")


def make_twins(case, backend, dtype=torch.float64):
    cin, cout, k, s, p, d, g, bias, mode, strategy, rate, shape = CASES[case]
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, cin, cout, k, s, p, d, g, bias, mode,
                     strategy=strategy, rate=rate, dtype=dtype, backend=backend)
    return fast, ref, shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference_float64(case, backend):
    fast, ref, shape = make_twins(case, backend)
    compare_units(fast, ref, torch.randn(shape, dtype=torch.float64), REL_TOL[torch.float64], f"{case}/{backend}")


@pytest.mark.parametrize("layout", ["channels_last", "non_contiguous", "unbatched"])
@pytest.mark.parametrize("case", ["cl_nonsquare_s2_tuplepad_grouped", "cl_depthwise_s2", "ck_k7_s2"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_input_layouts(case, backend, layout):
    fast, ref, shape = make_twins(case, backend)
    x = torch.randn(shape, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        assert not x.is_contiguous()
    elif layout == "non_contiguous":
        x = torch.randn(shape[0], shape[1], shape[3], 2 * shape[2], dtype=torch.float64)[..., ::2].transpose(2, 3)
        assert x.shape == shape and not x.is_contiguous()
    else:
        x = x[0]
    compare_units(fast, ref, x, REL_TOL[torch.float64], f"{case}/{backend}/{layout}")


@pytest.mark.parametrize("case", ["cl_k3", "cl_depthwise_s2", "ck_k7_s2"])
def test_float32(case):
    fast, ref, shape = make_twins(case, "torch", dtype=torch.float32)
    compare_units(fast, ref, torch.randn(shape), REL_TOL[torch.float32], f"{case}/float32")


@pytest.mark.parametrize("case", ["cl_k3", "ck_k5"])
def test_autocast_bfloat16_composes_in_float32(case):
    fast, ref, shape = make_twins(case, "torch", dtype=torch.float32)
    x = torch.randn(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fast(x)
    assert y.dtype == torch.bfloat16
    expected = ref.double()(x.double())
    assert_rel_close(y.float(), expected, REL_TOL[torch.bfloat16], f"{case} autocast output")
    # The composed weight stays float32 even under autocast (it is cast only by the convolution).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight, bias = fast.composed_weight()
    assert weight.dtype == torch.float32 and bias.dtype == torch.float32


@pytest.mark.parametrize("case", ["cl_k3", "ck_k5"])
def test_bfloat16_module(case):
    """A module converted to bf16 composes in float32 and convolves in bf16."""
    fast, ref, shape = make_twins(case, "torch", dtype=torch.float64)
    compare_units(fast.to(torch.bfloat16), ref, torch.randn(shape, dtype=torch.float64),
                  REL_TOL[torch.bfloat16], f"{case}/bf16")


@pytest.mark.parametrize("case", ["cl_k3", "ck_k5", "cl_depthwise_s2"])
def test_composed_weight_equals_reference_contraction(case):
    fast, ref, _ = make_twins(case, "torch")
    weight, bias = fast.composed_weight()
    contracted = ref.contract()
    torch.testing.assert_close(weight, contracted.weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bias, contracted.bias, rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["cl_k3", "cl_depthwise_s2", "ck_k7_s2", "cl_circular_s2_d2"])
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_cuda_matches_reference(case, dtype, backend):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    fast, ref, shape = make_twins(case, backend, dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, device="cuda")
    compare_units(fast.cuda().to(dtype), ref.cuda(), x, REL_TOL[dtype], f"{case}/cuda/{backend}/{dtype}")


@pytest.mark.parametrize("m,n,a,c,k,g,order", [
    (3, 5, 6, 10, 3, 1, "w1_first"),           # few taps: transpose w2, two large GEMMs
    (3, 4, 6, 8, 5, 1, "w1_first"),            # >= 16 taps: contract over a in place
    (8, 2, 16, 4, 3, 1, "w3_first"),
    (6, 6, 24, 24, 3, 6, "w3_first"),          # depthwise: a tie goes to W3 first
])
def test_compose_cl_every_order_matches_reference(m, n, a, c, k, g, order):
    from expandnets_cuda.compose.cl import compose_cl
    from expandnets_cuda.compose.products import cl_cost
    cost_w3_first, cost_w1_first = cl_cost(m // g, a // g, c // g, n // g, k * k, g)
    assert (cost_w3_first <= cost_w1_first) == (order == "w3_first")
    w1 = torch.randn(a, m // g, 1, 1, dtype=torch.float64)
    w2 = torch.randn(c, a // g, k, k, dtype=torch.float64)
    w3 = torch.randn(n, c // g, 1, 1, dtype=torch.float64)
    b1, b2, b3 = (torch.randn(s, dtype=torch.float64) for s in (a, c, n))
    weight, bias = compose_cl(w1, b1, w2, b2, w3, b3, g)
    ref_w, ref_b = pr.contract_cl([w1, w2, w3], [b1, b2, b3], g)
    torch.testing.assert_close(weight, ref_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bias, ref_b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("write", ["through .data", "in place under no_grad", "load_state_dict"])
def test_evaluation_sees_every_change_of_a_parameter(write):
    """Evaluation composes afresh at every call, as nn.Conv2d reads its weight afresh: a write
    through ``p.data`` (EMA, pruning) bumps no version, so a version-keyed cache went stale."""
    fast, ref, shape = make_twins("cl_k3", "torch")
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        before = fast(x)
        assert_rel_close(before, ref(x), REL_TOL[torch.float64], "before")
        if write == "through .data":
            fast.layers[1].weight.data.mul_(1.5)
            ref.layers[1].weight.data.mul_(1.5)
        elif write == "in place under no_grad":
            fast.layers[1].weight.mul_(1.5)
            ref.layers[1].weight.mul_(1.5)
        else:
            ref.layers[1].weight.mul_(1.5)
            fast.load_state_dict(ref.state_dict())
        after = fast(x)
        assert not torch.allclose(after, before)
        assert_rel_close(after, ref(x), REL_TOL[torch.float64], f"after a write {write}")
