"""torch.compile(fullgraph=True) of fused units and models: the unfused chain's outputs and every
gradient, on each torch the project is tested on (2.11, the GPU image's, and 2.13).

torch 2.11 gave these silently wrong or failed where 2.13 did not: a CK unit with one input
channel trained with zero gradients (an autograd Function output made by a no-op
``.contiguous()``), a bias-free unit did not compile (a ``None`` Function output), nor did a CL
unit with bias under Inductor on a CPU (a convolution whose bias is a view)."""
import pytest
import torch
from torch import nn

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.backends import auto as autotune
from expandnets_cuda.compose import products as composition_products
from helpers import REL_TOL, assert_rel_close, compare_units, twin

# (strategy, in channels, out channels): one input channel (a grayscale image) and one output
# make the composed kernel a contiguous *view*, the case torch 2.11 lost the gradient of.
SHAPES = [("cl", 3, 4), ("cl", 1, 1), ("ck", 3, 4), ("ck", 1, 4), ("fc", 12, 5), ("fc", 1, 1)]


def _unit(strategy, c_in, c_out, bias, backend):
    if strategy == "fc":
        return twin(ec.FusedExpandLinear, pr.ExpandedLinear, c_in, c_out, bias=bias, rate=2, backend=backend)
    k = 3 if strategy == "cl" else 5
    return twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, c_in, c_out, k, padding=1, bias=bias,
                strategy=strategy, rate=2, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("strategy,c_in,c_out", SHAPES, ids=[f"{s}-{i}to{o}" for s, i, o in SHAPES])
def test_compiled_unit_matches_the_reference(strategy, c_in, c_out, bias, backend):
    """Compiled before any eager call (``auto`` then knows no candidates: the torch pair)."""
    torch._dynamo.reset()
    autotune._FOUND.clear()
    fast, ref = _unit(strategy, c_in, c_out, bias, backend)
    fast, ref = fast.double(), ref.double()
    fast.forward = torch.compile(fast.forward, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, c_in) if strategy == "fc" else torch.randn(2, c_in, 6, 5)
    compare_units(fast, ref, x.double(), REL_TOL[torch.float64], f"compiled {strategy} {c_in}->{c_out}")


def test_a_contiguous_view_returned_by_a_function_keeps_its_gradient_under_compile():
    """What ``contiguous_output`` is for, on the smallest Function: a kernel with one input
    channel is a contiguous view of the fold's output."""
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, w):
            return composition_products.contiguous_output((w * 2).unsqueeze(1).permute(0, 2, 1))

        @staticmethod
        def backward(ctx, g):
            return 2 * g.reshape(3, 5)

    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    torch._dynamo.reset()
    y = torch.compile(Double.apply, fullgraph=True, backend="aot_eager")(w)
    (grad,) = torch.autograd.grad(y, w, torch.ones_like(y))
    assert_rel_close(grad, torch.full_like(w, 2.0), 0.0, "gradient through the compiled Function")


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_compile_fullgraph_matches_eager(backend):
    """A small network under Inductor (the default compiler)."""
    torch._dynamo.reset()
    model = nn.Sequential(
        ec.FusedExpandConv2d(3, 8, 3, padding=1, rate=2, backend=backend), nn.ReLU(),
        ec.FusedExpandConv2d(8, 8, 5, stride=2, padding=2, strategy="ck", rate=2, backend=backend),
        nn.Flatten(), ec.FusedExpandLinear(8 * 4 * 4, 5, rate=2, backend=backend))
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True)
    y_eager, y_compiled = model(x), compiled(x)
    assert_rel_close(y_compiled, y_eager, 1e-5, "compiled output")
    g_eager = torch.autograd.grad(y_eager.square().sum(), list(model.parameters()))
    g_compiled = torch.autograd.grad(y_compiled.square().sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), g_compiled, g_eager):
        assert_rel_close(a, b, 1e-4, f"compiled grad {name}")
