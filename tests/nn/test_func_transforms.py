"""torch.func transforms (grad, vmap, jacrev) over fused units and expanded networks: the units run
as the unfused chain there (the composers' autograd Functions have no functorch rules), so
per-sample gradients, Jacobians and functional gradients match ordinary autograd through the
fused path."""
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import expandnets_cuda as ec
from expandnets_cuda.nn import network as network_composition
from expandnets_cuda.nn.unit import functorch_transforms_active
from network_cases import mixed_net

TOL = dict(rtol=1e-9, atol=1e-10)  # float64 throughout

UNITS = {
    "cl": lambda: ec.FusedExpandConv2d(4, 6, 3, stride=2, padding=1, strategy="cl", rate=2, dtype=torch.float64),
    "cl-groups": lambda: ec.FusedExpandConv2d(4, 6, 3, padding=1, groups=2, strategy="cl", rate=2,
                                              dtype=torch.float64),
    "ck": lambda: ec.FusedExpandConv2d(3, 5, 5, padding=2, strategy="ck", rate=2, dtype=torch.float64),
    "cl-nobias": lambda: ec.FusedExpandConv2d(3, 4, 3, dilation=2, bias=False, strategy="cl", rate=1.5,
                                              dtype=torch.float64),
}


def _params(module: nn.Module):
    return {name: p.detach() for name, p in module.named_parameters()}


def test_transforms_are_seen_only_inside_them():
    seen = []
    grad(lambda x: (seen.append(functorch_transforms_active()), x.sum())[1])(torch.randn(2))
    assert seen == [True] and not functorch_transforms_active()


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_per_sample_gradients_of_a_conv_unit_match_autograd(kind):
    unit = UNITS[kind]()
    x = torch.randn(3, unit.in_channels, 7, 6, dtype=torch.float64)
    target = torch.randn_like(unit(x))

    def loss(params, xi, ti):
        return (functional_call(unit, params, (xi.unsqueeze(0),)).squeeze(0) - ti).square().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(_params(unit), x, target)
    for b in range(x.shape[0]):  # ordinary autograd through the fused path, one sample at a time
        unit.zero_grad(set_to_none=True)
        (unit(x[b:b + 1]) - target[b:b + 1]).square().sum().backward()
        for name, p in unit.named_parameters():
            torch.testing.assert_close(per_sample[name][b], p.grad, **TOL, msg=f"{kind} {name} sample {b}")


def test_per_sample_gradients_of_a_linear_unit_and_its_input_jacobian():
    unit = ec.FusedExpandLinear(5, 3, rate=2, dtype=torch.float64)
    x = torch.randn(4, 5, dtype=torch.float64)

    def loss(params, xi):
        return functional_call(unit, params, (xi,)).sin().sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(_params(unit), x)
    for b in range(x.shape[0]):
        unit.zero_grad(set_to_none=True)
        unit(x[b]).sin().sum().backward()
        for name, p in unit.named_parameters():
            torch.testing.assert_close(per_sample[name][b], p.grad, **TOL, msg=f"{name} sample {b}")
    jacobian = jacrev(unit)(x[0])
    expected = torch.autograd.functional.jacobian(unit, x[0])
    assert jacobian.shape == (3, 5)
    torch.testing.assert_close(jacobian, expected, **TOL)


@pytest.mark.parametrize("strategy", ["cl", "ck"])
@pytest.mark.filterwarnings("ignore:expand_model:UserWarning")  # CK leaves the 3x3 layer compact
def test_functional_gradient_of_an_expanded_network_matches_its_training_step(strategy):
    model = ec.expand_model(mixed_net(), strategy, 2, fc=True, backend="torch").double()
    x, y = torch.randn(3, 3, 6, 6, dtype=torch.float64), torch.randint(0, 4, (3,))
    nn.functional.cross_entropy(model(x), y).backward()  # a step first: the network composer groups units
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}

    def loss(params):
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    got = grad(loss)(_params(model))
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOL, msg=name)
    assert all(network_composition.STAGED not in m.__dict__ for m in model.modules())
