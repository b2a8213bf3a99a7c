"""``FusedExpandLinear``: a drop-in ``nn.Linear`` trained in its FC-expanded form."""
from __future__ import annotations

import torch
from torch import nn

from expandnets_cuda.reference import LinearUnitSpec, build_linear_layers, contraction, run_chain
from expandnets_cuda.reference.spec import check_flag
from expandnets_cuda.backends import registry as backends
from expandnets_cuda.nn import chain as chain_unit
from expandnets_cuda.nn.unit import FusedUnit


class FusedExpandLinear(FusedUnit):
    """``Linear(a, r*a) -> Linear(r*a, r*b) -> Linear(r*b, b)`` computed as one ``Linear(a, b)``
    with the composed weight; same function and gradients as the unfused chain.

    ``rate``, ``nonlinear`` and ``backend`` as for ``FusedExpandConv2d``. Parameters live in
    ``self.layers`` (state_dict compatible with ``python_ref.ExpandedLinear``).
    """

    def __init__(self, in_features, out_features, bias=True, *, rate=4, nonlinear=False,
                 backend="auto", device=None, dtype=None):
        super().__init__()
        self.spec = LinearUnitSpec.create(in_features, out_features, bias, rate)
        self.nonlinear = check_flag(nonlinear, "nonlinear")
        self._init_backend(backend)
        self.layers = build_linear_layers(self.spec, device=device, dtype=dtype)

    in_features = property(lambda self: self.spec.in_features)
    out_features = property(lambda self: self.spec.out_features)
    rate = property(lambda self: self.spec.rate)

    def _compose_with(self, composer, weights, biases):
        return composer.fc(weights, biases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 0:
            raise ValueError("input must have at least one dimension (..., in_features)")
        self._check_tensor(x, -1, self.spec.in_features, "features")
        impl = self._resolve(x)
        if impl == backends.REFERENCE:
            return run_chain(x, self.layers, self.nonlinear)
        return self._fused_forward(impl, x)

    def _fused_forward(self, pair: backends.FusedPair, x: torch.Tensor) -> torch.Tensor:
        if isinstance(pair, backends.ChainRunner):  # the whole chain in fused kernels
            return chain_unit.run_linear_unit(pair, x, self.layers, self.nonlinear)
        weight, bias = self._to_compute_dtype(x, *self._composed(pair.composer, x.device.type))
        return pair.convolver.linear(x, weight, bias)

    def contract(self) -> nn.Linear:
        """The compact ``nn.Linear`` with the same function (composed in float64)."""
        weight, bias = self._contracted_params()
        return contraction.to_linear(self.spec, weight, bias, like=self.layers[0].weight)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_features}, {s.out_features}, bias={s.bias}, rate={s.rate:g}, "
                f"nonlinear={self.nonlinear}, backend={self.backend!r}")
