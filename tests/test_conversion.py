"""expand_model / contract_model round trips on the paper's models, and "+Init"."""
import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.models import mobilenet_v2_cifar, smallnet3, smallnet7
from helpers import assert_rel_close

MODELS = {"smallnet3": smallnet3, "smallnet7": smallnet7, "mobilenet_v2": mobilenet_v2_cifar}


def _randomise_bn(model):
    """Non-trivial BN statistics, so eval-mode comparisons exercise them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("fc", [False, True])
@pytest.mark.parametrize("strategy,model_name", [
    ("cl", "smallnet3"), ("cl", "smallnet7"), ("ck", "smallnet7"), ("cl", "mobilenet_v2")])
def test_round_trip(model_name, strategy, fc):
    compact = _randomise_bn(MODELS[model_name]().double())
    expanded = ec.expand_model(compact, strategy, rate=2, fc=fc).eval()
    units = [m for m in expanded.modules() if isinstance(m, (ec.FusedExpandConv2d, ec.FusedExpandLinear))]
    assert units and all(not m.nonlinear for m in units)
    assert not any(isinstance(m, (ec.FusedExpandConv2d, ec.FusedExpandLinear)) for m in compact.modules())
    contracted = ec.contract_model(expanded)
    assert ec.count_params(contracted) == ec.count_params(compact)
    assert not any(isinstance(m, (ec.FusedExpandConv2d, ec.FusedExpandLinear)) for m in contracted.modules())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert_rel_close(contracted(x), expanded(x), 1e-10, f"{model_name}/{strategy} contracted vs expanded")


def test_expanded_model_trains_like_the_unfused_chain():
    # Eval-mode BN: in train mode BN cancels the first biases' gradients exactly (to ~1e-17 noise).
    compact = _randomise_bn(smallnet7().double()).eval()
    fused = ec.expand_model(compact, "cl", rate=2, fc=True, backend="torch")
    unfused = ec.expand_model(compact, "cl", rate=2, fc=True, backend="reference")
    unfused.load_state_dict(fused.state_dict())
    x, target = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 0, 3, 9])
    grads = []
    for model in (fused, unfused):
        torch.nn.functional.cross_entropy(model(x), target).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[1]:
        assert_rel_close(grads[0][name], grads[1][name], 1e-10, f"grad {name}")


def test_ck_skips_what_it_cannot_expand_and_says_so():
    with pytest.warns(ec.ExpansionWarning, match="CK needs a square odd kernel"):
        expanded = ec.expand_model(smallnet3(), "ck")
    assert not any(isinstance(m, ec.FusedExpandConv2d) for m in expanded.modules())


def test_cl_leaves_1x1_unless_named():
    model = mobilenet_v2_cifar()
    expanded = ec.expand_model(model, "cl", rate=2)
    assert type(expanded.blocks[0].conv1) is nn.Conv2d
    assert isinstance(expanded.blocks[0].conv2, ec.FusedExpandConv2d)
    named = ec.expand_model(model, "cl", rate=2, layers=["blocks.0.conv1"])
    assert isinstance(named.blocks[0].conv1, ec.FusedExpandConv2d)
    assert type(named.blocks[0].conv2) is nn.Conv2d


def test_layer_filter_callable_and_inplace():
    model = smallnet7()
    out = ec.expand_model(model, "ck", layers=lambda name, m: name.startswith("blocks.3"), inplace=True)
    assert out is model
    assert isinstance(model.blocks[3].conv, ec.FusedExpandConv2d)
    assert type(model.blocks[0].conv) is nn.Conv2d


def test_init_from_nonlinear_copies_every_weight():
    compact = smallnet7().double()
    relu_net = ec.expand_model(compact, "cl", rate=2, fc=True, nonlinear=True)
    expandnet = ec.expand_model(compact, "cl", rate=2, fc=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert not torch.equal(relu_net.blocks[0].conv.layers[1].weight, expandnet.blocks[0].conv.layers[1].weight)
    ec.init_from_nonlinear(expandnet, relu_net)
    for (name, a), (_, b) in zip(expandnet.state_dict().items(), relu_net.state_dict().items()):
        assert torch.equal(a, b), name
    with torch.no_grad():  # same weights, different functions: the ReLUs are gone
        assert (expandnet.eval()(x) - relu_net.eval()(x)).abs().max() > 1e-6
    with pytest.raises(ValueError, match="nonlinear"):
        ec.contract_model(relu_net)


def test_init_from_nonlinear_rejects_mismatched_networks():
    compact = smallnet7()
    relu_net = ec.expand_model(compact, "cl", rate=2, nonlinear=True)
    with pytest.raises(ValueError, match="differs"):
        ec.init_from_nonlinear(ec.expand_model(compact, "cl", rate=4), relu_net)
    with pytest.raises(ValueError, match="differs"):
        ec.init_from_nonlinear(ec.expand_model(compact, "ck", rate=2), relu_net)
    with pytest.raises(ValueError, match="different places"):
        ec.init_from_nonlinear(ec.expand_model(compact, "cl", rate=2, fc=True), relu_net)
    with pytest.raises(ValueError, match="expected a linear unit"):
        ec.init_from_nonlinear(relu_net, relu_net)
