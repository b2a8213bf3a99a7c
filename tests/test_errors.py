"""Every invalid argument gets a ValueError/TypeError that names it, at construction or call time."""
import pytest
import torch
from torch import nn

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.models import smallnet7

Conv = ec.FusedExpandConv2d
Lin = ec.FusedExpandLinear

CONSTRUCTION = [
    # (what, callable, exception, text that must appear)
    ("rate < 1", lambda: Conv(4, 4, 3, rate=0.5), ValueError, "rate"),
    ("rate nan", lambda: Conv(4, 4, 3, rate=float("nan")), ValueError, "rate"),
    ("rate str", lambda: Conv(4, 4, 3, rate="4"), TypeError, "rate"),
    ("rate bool", lambda: Lin(4, 4, rate=True), TypeError, "rate"),
    ("groups not dividing in", lambda: Conv(6, 4, 3, groups=4), ValueError, "groups"),
    ("groups not dividing out", lambda: Conv(4, 6, 3, groups=4), ValueError, "groups"),
    ("groups zero", lambda: Conv(4, 4, 3, groups=0), ValueError, "groups"),
    ("CK on 3x3", lambda: Conv(4, 4, 3, strategy="ck"), ValueError, "kernel_size"),
    ("CK on even", lambda: Conv(4, 4, 6, strategy="ck"), ValueError, "kernel_size"),
    ("CK on non-square", lambda: Conv(4, 4, (5, 7), strategy="ck"), ValueError, "kernel_size"),
    ("CK grouped", lambda: Conv(4, 4, 5, groups=2, strategy="ck"), ValueError, "groups"),
    ("unknown strategy", lambda: Conv(4, 4, 3, strategy="fc"), ValueError, "strategy"),
    ("kernel zero", lambda: Conv(4, 4, 0), ValueError, "kernel_size"),
    ("kernel float", lambda: Conv(4, 4, 3.0), TypeError, "kernel_size"),
    ("kernel triple", lambda: Conv(4, 4, (3, 3, 3)), TypeError, "kernel_size"),
    ("stride zero", lambda: Conv(4, 4, 3, stride=0), ValueError, "stride"),
    ("negative padding", lambda: Conv(4, 4, 3, padding=-1), ValueError, "padding"),
    ("padding word", lambda: Conv(4, 4, 3, padding="full"), ValueError, "padding"),
    ("same with stride", lambda: Conv(4, 4, 3, stride=2, padding="same"), ValueError, "padding"),
    ("dilation zero", lambda: Conv(4, 4, 3, dilation=0), ValueError, "dilation"),
    ("padding_mode", lambda: Conv(4, 4, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    ("in_channels zero", lambda: Conv(0, 4, 3), ValueError, "in_channels"),
    ("out_channels float", lambda: Conv(4, 4.0, 3), TypeError, "out_channels"),
    ("bias not bool", lambda: Conv(4, 4, 3, bias=1), TypeError, "bias"),
    ("in_features", lambda: Lin(0, 4), ValueError, "in_features"),
    ("out_features", lambda: Lin(4, "4"), TypeError, "out_features"),
    ("unknown backend", lambda: Conv(4, 4, 3, backend="cudnn9"), ValueError, "backend"),
    ("backend not str", lambda: Conv(4, 4, 3, backend=None), TypeError, "backend"),
    ("bad pair", lambda: Conv(4, 4, 3, backend="torch+nope"), ValueError, "backend"),
    ("nonlinear fused", lambda: Conv(4, 4, 3, nonlinear=True, backend="torch"), ValueError, "backend"),
    ("reference unit rate", lambda: pr.ExpandedConv2d(4, 4, 3, rate=0), ValueError, "rate"),
    ("expand strategy", lambda: ec.expand_model(smallnet7(), "xx"), ValueError, "strategy"),
    ("expand rate", lambda: ec.expand_model(smallnet7(), "cl", rate=0.9), ValueError, "rate"),
    ("expand model type", lambda: ec.expand_model("net"), TypeError, "model"),
    ("expand layers str", lambda: ec.expand_model(smallnet7(), layers="fc1"), TypeError, "layers"),
    ("expand unknown layer", lambda: ec.expand_model(smallnet7(), layers=["fc9"]), ValueError, "layers"),
    ("expand fc type", lambda: ec.expand_model(smallnet7(), fc="yes"), TypeError, "fc"),
    ("contract model type", lambda: ec.contract_model(3), TypeError, "model"),
    ("init expandnet type", lambda: ec.init_from_nonlinear(1, nn.Linear(2, 2)), TypeError, "expandnet"),
    ("complexity shape", lambda: ec.complexity(smallnet7(), ()), ValueError, "input_shape"),
]


@pytest.mark.parametrize("what,make,exc,text", CONSTRUCTION, ids=[c[0] for c in CONSTRUCTION])
def test_invalid_arguments(what, make, exc, text):
    with pytest.raises(exc, match=text):
        make()


CALLS = [
    ("not a tensor", lambda m: m([1.0]), TypeError, "input"),
    ("integer input", lambda m: m(torch.ones(1, 4, 5, 5, dtype=torch.int64)), TypeError, "input"),
    ("wrong dtype", lambda m: m(torch.randn(1, 4, 5, 5, dtype=torch.float64)), TypeError, "input dtype"),
    ("wrong channels", lambda m: m(torch.randn(1, 3, 5, 5)), ValueError, "input has 3 channels"),
    ("2-D input", lambda m: m(torch.randn(4, 5)), ValueError, "input must be 3-D"),
    ("too small", lambda m: m(torch.randn(1, 4, 2, 9)), ValueError, "input spatial size"),
    ("wrong device", lambda m: m(torch.randn(1, 4, 5, 5, device="meta")), ValueError, "input is on meta"),
]


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("what,call,exc,text", CALLS, ids=[c[0] for c in CALLS])
def test_invalid_inputs_conv(what, call, exc, text, backend):
    with pytest.raises(exc, match=text):
        call(Conv(4, 4, 3, backend=backend))


@pytest.mark.parametrize("x,exc,text", [
    (torch.randn(3, 5), ValueError, "input has 5 features"),
    (torch.tensor(1.0), ValueError, "at least one dimension"),
    (torch.ones(2, 4, dtype=torch.int32), TypeError, "floating-point"),
])
def test_invalid_inputs_linear(x, exc, text):
    with pytest.raises(exc, match=text):
        Lin(4, 2)(x)


def test_unavailable_backend_says_why():
    info = ec.available_backends()
    assert info["torch"].available and info["reference"].available
    for name, entry in info.items():
        if not entry.available:
            assert entry.reason, name
            with pytest.raises(ec.BackendUnavailableError, match=name):
                Conv(4, 4, 3, backend=name)


def test_backend_can_be_switched_and_is_validated():
    unit = Conv(4, 4, 3, backend="reference")
    unit.backend = "torch"
    assert unit.backend == "torch"
    with pytest.raises(ValueError, match="backend"):
        unit.backend = "fastest"
