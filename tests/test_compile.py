"""torch.compile(fullgraph=True) of a model using the torch backend: same outputs and gradients."""
import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from helpers import assert_rel_close


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_compile_fullgraph_matches_eager(backend):
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
