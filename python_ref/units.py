"""The unfused expanded units: the semantic definition every fast path is tested against.

Plain ``nn.Conv2d`` / ``nn.Linear`` sub-layers in a ``ModuleList`` called ``layers``; the fused
modules own exactly the same sub-modules, so their state_dicts interchange.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import contraction
from .spec import ConvUnitSpec, LinearUnitSpec, check_flag, pad_input


def build_conv_layers(spec: ConvUnitSpec, device=None, dtype=None) -> nn.ModuleList:
    """The sub-layers of a CL/CK unit, all "valid" (the unit's padding is applied once, before)."""
    return nn.ModuleList(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=0,
                  dilation=spec.dilation if kernel != (1, 1) else 1,
                  groups=groups, bias=spec.bias, device=device, dtype=dtype)
        for cin, cout, kernel, stride, groups in spec.layer_shapes())


def build_linear_layers(spec: LinearUnitSpec, device=None, dtype=None) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b, bias=spec.bias, device=device, dtype=dtype)
                         for a, b in spec.layer_shapes())


def run_chain(x: torch.Tensor, layers: Sequence[nn.Module], nonlinear: bool) -> torch.Tensor:
    """Apply the sub-layers in order; the nonlinear counterpart puts a ReLU between them."""
    for i, layer in enumerate(layers):
        if nonlinear and i > 0:
            x = torch.relu(x)
        x = layer(x)
    return x


def layer_params(layers: Sequence[nn.Module]):
    weights = [layer.weight for layer in layers]
    biases = [layer.bias for layer in layers] if layers[0].bias is not None else None
    return weights, biases


class ExpandedConv2d(nn.Module):
    """Unfused CL or CK expansion of ``Conv2d(in_channels, out_channels, kernel_size, ...)``.

    Takes ``nn.Conv2d``'s arguments plus ``strategy`` ("cl" or "ck"), ``rate`` and ``nonlinear``
    (ReLU between the sub-layers: the "+Init" counterpart, which cannot be contracted).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, strategy="cl", rate=4,
                 nonlinear=False, device=None, dtype=None):
        super().__init__()
        self.spec = ConvUnitSpec.create(in_channels, out_channels, kernel_size, stride, padding,
                                        dilation, groups, bias, padding_mode, strategy, rate)
        self.nonlinear = check_flag(nonlinear, "nonlinear")
        self.layers = build_conv_layers(self.spec, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_chain(pad_input(x, self.spec), self.layers, self.nonlinear)

    @torch.no_grad()
    def contract(self) -> nn.Conv2d:
        if self.nonlinear:
            raise ValueError("a nonlinear counterpart (ReLU between sub-layers) cannot be contracted")
        weights, biases = layer_params(self.layers)
        if self.spec.strategy == "cl":
            w, b = contraction.contract_cl(weights, biases, self.spec.groups)
        else:
            w, b = contraction.contract_ck(weights, biases)
        return contraction.to_conv2d(self.spec, w, b, like=weights[0])

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, stride={s.stride}, "
                f"padding={s.padding}, dilation={s.dilation}, groups={s.groups}, bias={s.bias}, "
                f"strategy={s.strategy!r}, rate={s.rate:g}, nonlinear={self.nonlinear}")


class ExpandedLinear(nn.Module):
    """Unfused FC expansion ``Linear(a, r*a) -> Linear(r*a, r*b) -> Linear(r*b, b)``."""

    def __init__(self, in_features, out_features, bias=True, *, rate=4, nonlinear=False,
                 device=None, dtype=None):
        super().__init__()
        self.spec = LinearUnitSpec.create(in_features, out_features, bias, rate)
        self.nonlinear = check_flag(nonlinear, "nonlinear")
        self.layers = build_linear_layers(self.spec, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_chain(x, self.layers, self.nonlinear)

    @torch.no_grad()
    def contract(self) -> nn.Linear:
        if self.nonlinear:
            raise ValueError("a nonlinear counterpart (ReLU between sub-layers) cannot be contracted")
        weights, biases = layer_params(self.layers)
        w, b = contraction.contract_fc(weights, biases)
        return contraction.to_linear(self.spec, w, b, like=weights[0])

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_features}, {s.out_features}, bias={s.bias}, rate={s.rate:g}, "
                f"nonlinear={self.nonlinear}")
