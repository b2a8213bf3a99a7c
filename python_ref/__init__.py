"""Pure-PyTorch reference for ExpandNets: the semantic definition of every expanded unit.

Nothing here is fast; everything here is obviously what the paper means. The fused modules in
``expandnets_cuda`` are tested against these units and contraction functions.
"""
from .contraction import compose_two_kernels, contract_ck, contract_cl, contract_fc
from .spec import ConvUnitSpec, LinearUnitSpec, ck_ineligibility, expanded_width, pad_input
from .units import (ExpandedConv2d, ExpandedLinear, build_conv_layers, build_linear_layers, layer_params,
                    run_chain)

__all__ = [
    "ConvUnitSpec", "LinearUnitSpec", "ExpandedConv2d", "ExpandedLinear", "build_conv_layers",
    "build_linear_layers", "layer_params", "run_chain", "ck_ineligibility", "expanded_width", "pad_input",
    "contract_cl", "contract_ck", "contract_fc", "compose_two_kernels",
]
