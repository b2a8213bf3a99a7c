"""Running a whole expanded unit through a backend's chain-fused kernels (``triton-chain``,
``cuda-chain``): the nonlinear counterpart's only fast path, and a third path for linear units.

The chain op computes ``layer1 -> act -> layer2 [-> act -> 1x1]`` in one launch (see
``triton_backend/chain_kernels.py``). How each unit maps onto it:
- CL: the three sub-layers, layer 1 pointwise, any stride/dilation/groups.
- CK with two 3x3 (k=5): layer 1 is the first 3x3, no layer 3.
- CK deeper (k >= 7): the first L-2 3x3 run as per-layer convolutions of the same backend (their
  outputs are saved for backward, as unfused), the last two as one chain launch.
- FC: every row is a 1x1 image, the three Linear layers 1x1 convolutions.
Zero padding goes to the kernel (applied once at the unit's input, as ``python_ref`` does); other
padding modes are applied here first.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .reference import ConvUnitSpec, pad_input
from .kernel_convolver import autocast_inputs, exact_fp32

Tensor = torch.Tensor


def _params(layers: Sequence[torch.nn.Module]):
    return [layer.weight for layer in layers], [layer.bias for layer in layers]


def run_conv_unit(runner, x: Tensor, spec: ConvUnitSpec, layers: Sequence[torch.nn.Module], relu: bool) -> Tensor:
    """The unit's output for a batched input ``x (N, C, H, W)`` through ``runner``'s chain op."""
    weights, biases = _params(layers)
    x, *params = autocast_inputs(x, *weights, *(b for b in biases if b is not None))
    weights = params[:len(weights)]
    biases = params[len(weights):] if spec.bias else [None] * len(weights)
    exact = exact_fp32()
    pads = list(spec.pad)
    if spec.padding_mode != "zeros" or (spec.strategy == "ck" and len(weights) > 2 and any(pads)):
        x, pads = pad_input(x, spec), [0, 0, 0, 0]
    dil = list(spec.dilation)
    if spec.strategy == "cl":
        return runner.chain(x, weights[0], biases[0], weights[1], biases[1], weights[2], biases[2],
                            pads, [1, 1], list(spec.stride), dil, spec.groups, relu, exact)
    for weight, bias in zip(weights[:-2], biases[:-2]):  # CK deeper than two layers: per-layer first
        x = runner.conv2d(x, weight, bias, (1, 1), (0, 0), spec.dilation, 1)
        if relu:
            x = torch.relu(x)
    return runner.chain(x, weights[-2], biases[-2], weights[-1], biases[-1], None, None,
                        pads, dil, list(spec.stride), dil, 1, relu, exact)


def run_linear_unit(runner, x: Tensor, layers: Sequence[torch.nn.Module], relu: bool) -> Tensor:
    """The FC unit's output for ``x (..., a)``: rows as 1x1 images through the chain op."""
    weights, biases = _params(layers)
    x, *params = autocast_inputs(x, *weights, *(b for b in biases if b is not None))
    weights = [w.reshape(*w.shape, 1, 1) for w in params[:3]]
    biases = params[3:] if biases[0] is not None else [None] * 3
    rows = x.reshape(-1, x.shape[-1], 1, 1)
    y = runner.chain(rows, weights[0], biases[0], weights[1], biases[1], weights[2], biases[2],
                     [0, 0, 0, 0], [1, 1], [1, 1], [1, 1], 1, relu, exact_fp32())
    return y.reshape(*x.shape[:-1], weights[2].shape[0])
