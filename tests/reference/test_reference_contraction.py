"""python_ref's contraction is exact: the contracted layer computes the unfused chain's function."""
import pytest
import torch
import torch.nn.functional as F

import python_ref as pr
from helpers import assert_rel_close
from conv_cases import CASES

TOL = 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv_contraction_is_exact(case):
    cin, cout, k, s, p, d, g, bias, mode, strategy, rate, shape = CASES[case]
    unit = pr.ExpandedConv2d(cin, cout, k, s, p, d, g, bias, mode, strategy=strategy, rate=rate,
                             dtype=torch.float64)
    compact = unit.contract()
    assert type(compact) is torch.nn.Conv2d and compact.weight.dtype == torch.float64
    x = torch.randn(shape, dtype=torch.float64)
    assert_rel_close(compact(x), unit(x), TOL, f"{case}: contracted vs chain")


@pytest.mark.parametrize("rate", [1, 2.5, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_contraction_is_exact(rate, bias):
    unit = pr.ExpandedLinear(7, 5, bias, rate=rate, dtype=torch.float64)
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    assert_rel_close(unit.contract()(x), unit(x), TOL, "FC contracted vs chain")


def test_two_kernel_composition_matches_two_convolutions():
    later, earlier = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(3, 2, 3, 2, dtype=torch.float64)
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    chained = F.conv2d(F.conv2d(x, earlier), later)
    assert_rel_close(F.conv2d(x, pr.compose_two_kernels(later, earlier)), chained, TOL, "full correlation")


def test_nonlinear_counterpart_is_not_linear_and_refuses_contraction():
    unit = pr.ExpandedConv2d(3, 4, 3, padding=1, rate=2, nonlinear=True, dtype=torch.float64)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert (unit(x) + unit(-x) - 2 * unit(torch.zeros_like(x))).abs().max() > 1e-6  # ReLU is really there
    with pytest.raises(ValueError, match="nonlinear"):
        unit.contract()


def test_padding_on_the_kxk_breaks_equivalence():
    """Why padding goes once at the unit's input: padding the kxk instead makes the border
    depend on the first bias, which no compact conv reproduces (docs/design.md section 1)."""
    unit = pr.ExpandedConv2d(3, 4, 3, padding=1, rate=2, dtype=torch.float64)
    with torch.no_grad():
        unit.layers[0].bias.normal_(0, 3)
    conv1, conv2, conv3 = unit.layers
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    wrong = conv3(F.conv2d(conv1(x), conv2.weight, conv2.bias, padding=1))
    compact = unit.contract()
    border = (wrong - compact(x))[..., 0, :].abs().max()
    assert border > 1e-3
    assert_rel_close(compact(x), unit(x), TOL, "padding once at the input")


def test_rate_rounding():
    assert pr.expanded_width(8, 4) == 32
    assert pr.expanded_width(3, 1.5) == 5  # 4.5 rounds half up
    assert pr.expanded_width(6, 1.5, groups=3) == 9  # per group: 2 * 1.5 = 3
    assert pr.expanded_width(6, 1.2, groups=6) == 6  # never narrower than the compact layer
    assert pr.expanded_width(10, 1.0) == 10
