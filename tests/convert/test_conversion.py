"""expand_model / contract_model round trips on the paper's models, and "+Init"."""
import warnings

import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.models import mobilenet_v2_cifar, smallnet3, smallnet7
from helpers import assert_rel_close, randomise_bn as _randomise_bn

MODELS = {"smallnet3": smallnet3, "smallnet7": smallnet7, "mobilenet_v2": mobilenet_v2_cifar}


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


# --- the expansion plan: what expand_model does to each layer, and why -------------------------

def test_plan_says_for_every_layer_what_happens_and_why():
    model = mobilenet_v2_cifar()
    plan = ec.plan_expansion(model, "cl", rate=4)
    names = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert [d.name for d in plan] == names
    assert plan.decision("conv1").action == "cl"
    assert "1x1" in plan.decision("blocks.0.conv1").detail and not plan.decision("blocks.0.conv1").expanded
    assert "fc=True" in plan.decision("linear").detail
    depthwise = plan.decision("blocks.0.conv2")
    assert depthwise.layer == "Conv2d 32->32 3x3 dw"
    assert depthwise.detail == "1x1 32->128 | 3x3 128->128 | 1x1 128->32, g32"
    text = str(plan).splitlines()
    assert len(text) == len(plan) + 1 and text[0].startswith("expand_model plan (strategy 'cl', rate 4")
    assert all(len(line) < 150 for line in text), max(text, key=len)
    # the plan's parameter counts are the units' real ones
    expanded = ec.expand_model(model, "cl", rate=4)
    assert ec.count_params(expanded) - ec.count_params(model) == plan.added_params == 1_037_540
    for d in plan:
        assert sum(p.numel() for p in expanded.get_submodule(d.name).parameters()) == d.params_expanded


def test_plan_of_ck_and_fc_widths_and_layer_filters():
    plan = ec.plan_expansion(smallnet7(), "ck", rate=2, fc=True, layers=["blocks.0.conv", "fc1"])
    assert plan.expanded == ["blocks.0.conv", "fc1"]
    assert plan.decision("blocks.0.conv").detail == "3x3 3->6 | 3x3 6->16 | 3x3 16->8"
    assert plan.decision("fc1").detail == "256->512->128->64"
    assert plan.decision("blocks.1.conv").detail == "not named in layers="
    by_callable = ec.plan_expansion(smallnet7(), "cl", layers=lambda name, m: name.startswith("fc"))
    assert by_callable.decision("blocks.2.conv").detail == "excluded by the layers= filter"
    assert ec.plan_expansion(smallnet7(), None).decision("blocks.0.conv").detail.startswith("strategy=None")


def test_dry_run_returns_the_plan_and_changes_nothing():
    model = smallnet7()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    plan = ec.expand_model(model, "cl", rate=2, fc=True, dry_run=True, inplace=True)
    assert isinstance(plan, ec.ExpansionPlan)
    assert [m for m in model.modules() if type(m) is nn.Conv2d] == convs
    assert not any(isinstance(m, ec.FusedExpandConv2d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "expansion_plan")
    expanded = ec.expand_model(model, "cl", rate=2, fc=True)
    assert list(expanded.expansion_plan) == list(plan)
    assert plan.expanded == [n for n, m in expanded.named_modules()
                             if isinstance(m, (ec.FusedExpandConv2d, ec.FusedExpandLinear))]


def test_plan_is_logged(caplog):
    with caplog.at_level("INFO", logger="expandnets_cuda.convert.model"):
        ec.expand_model(smallnet3(), "cl", rate=2)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "blocks.0.conv" in logged and "fc1" in logged and "FC expansion is off" in logged


def test_warns_when_it_expands_nothing():
    linear_only = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with pytest.warns(ec.ExpansionWarning, match="expanded nothing") as record:
        out = ec.expand_model(linear_only, "cl")
    assert "Linear: FC expansion is off" in str(record[0].message)
    assert not any(isinstance(m, ec.FusedExpandLinear) for m in out.modules())
    with pytest.warns(ec.ExpansionWarning, match="no plain Conv2d/Linear below its root"):
        ec.expand_model(nn.Conv2d(3, 4, 3), "cl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say when something is expanded
        ec.expand_model(linear_only, "cl", fc=True)
        ec.expand_model(smallnet7(), "cl", rate=2)


def test_ck_warning_is_a_summary_and_one_line_per_layer():
    with pytest.warns(ec.ExpansionWarning) as record:
        ec.expand_model(mobilenet_v2_cifar(), "ck", rate=2)
    lines = str(record[0].message).splitlines()
    assert "expanded nothing" in lines[0]
    assert any("x CK needs a square odd kernel of size >= 5, got 1x1" in line for line in lines)
    assert any(line.strip().startswith("conv1 ") for line in lines)
    assert "more" in lines[-1] and max(len(line) for line in lines) < 140
    mixed = nn.Sequential(nn.Conv2d(3, 4, 7, padding=3), nn.Conv2d(4, 4, 3, padding=1),
                          nn.Conv2d(4, 4, 5, padding=2, groups=2))
    with pytest.warns(ec.ExpansionWarning, match="cannot expand 2 selected layer") as record:
        out = ec.expand_model(mixed, "ck", rate=2)
    lines = str(record[0].message).splitlines()
    assert len(lines) == 5  # summary, two reasons, one line per layer
    assert lines[-2].split()[:2] == ["1", "Conv2d"] and lines[-1].split()[:2] == ["2", "Conv2d"]
    assert "groups=1" in lines[-1]
    assert isinstance(out[0], ec.FusedExpandConv2d) and type(out[1]) is nn.Conv2d
