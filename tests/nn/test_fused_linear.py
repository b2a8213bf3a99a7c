"""FusedExpandLinear against python_ref.ExpandedLinear: outputs and every gradient."""
import pytest
import torch

import expandnets_cuda as ec
import python_ref as pr
from helpers import REL_TOL, compare_units, twin
from test_fused_conv import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("in_f,out_f,bias,rate,shape", [
    (7, 5, True, 2, (3, 7)),
    (5, 9, False, 1.5, (1, 5)),
    (6, 2, True, 4, (2, 3, 6)),
    (4, 4, True, 1, (4,)),
])
def test_matches_reference(backend, in_f, out_f, bias, rate, shape):
    fast, ref = twin(ec.FusedExpandLinear, pr.ExpandedLinear, in_f, out_f, bias, rate=rate,
                     dtype=torch.float64, backend=backend)
    compare_units(fast, ref, torch.randn(shape, dtype=torch.float64), REL_TOL[torch.float64], backend)


def test_non_contiguous_input_and_float32():
    fast, ref = twin(ec.FusedExpandLinear, pr.ExpandedLinear, 6, 3, rate=3, backend="torch")
    x = torch.randn(6, 4).t()
    assert not x.is_contiguous()
    compare_units(fast, ref, x, REL_TOL[torch.float32], "float32 transposed input")


def test_contract_is_exact():
    fast = ec.FusedExpandLinear(9, 4, rate=3, dtype=torch.float64)
    x = torch.randn(5, 9, dtype=torch.float64)
    torch.testing.assert_close(fast.contract()(x), fast(x), rtol=1e-12, atol=1e-12)
