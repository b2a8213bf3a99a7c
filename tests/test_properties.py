"""Property test: for random valid specs, the torch backend matches the unfused chain exactly."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expandnets_cuda as ec
import python_ref as pr
from helpers import REL_TOL, compare_units, twin


@st.composite
def conv_specs(draw):
    strategy = draw(st.sampled_from(["cl", "ck"]))
    groups = 1 if strategy == "ck" else draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    if strategy == "ck":
        k = draw(st.sampled_from([5, 7]))
        kernel = (k, k)
    else:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.just("same") if stride == (1, 1) else st.just(0)))
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    rate = draw(st.sampled_from([1, 1.5, 2, 3]))
    bias = draw(st.booleans())
    pad = pr.ConvUnitSpec.create(cin, cout, kernel, stride, padding, dilation, groups, bias, mode,
                                 strategy, rate).pad
    need_h = dilation[0] * (kernel[0] - 1) + 1 - pad[2] - pad[3]
    need_w = dilation[1] * (kernel[1] - 1) + 1 - pad[0] - pad[1]
    # reflect/circular padding needs the input at least as large as the padding.
    low_h, low_w = max(need_h, 1, max(pad[2:]) + 1), max(need_w, 1, max(pad[:2]) + 1)
    h, w = draw(st.integers(low_h, low_h + 5)), draw(st.integers(low_w, low_w + 5))
    batch = draw(st.integers(1, 2))
    return (cin, cout, kernel, stride, padding, dilation, groups, bias, mode, strategy, rate), (batch, cin, h, w)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_specs())
def test_torch_backend_matches_reference(case):
    args, shape = case
    *conv_args, strategy, rate = args
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, *conv_args, strategy=strategy, rate=rate,
                     dtype=torch.float64, backend="torch")
    compare_units(fast, ref, torch.randn(shape, dtype=torch.float64), REL_TOL[torch.float64], str(args))
