"""Running a whole expanded unit through a backend's chain-fused kernels (``triton-chain``,
``cuda-chain``): the nonlinear counterpart's only fast path, and a third path for linear units.

The chain op computes ``layer1 -> act -> layer2 [-> act -> 1x1]`` in one launch (see
``kernels/triton/chain_kernels.py``). How each unit maps onto it:
- CL: the three sub-layers, layer 1 pointwise, any stride/dilation/groups.
- CK with two 3x3 (k=5): layer 1 is the first 3x3, no layer 3.
- CK deeper (k >= 7): the first L-2 3x3 run as per-layer convolutions of the same backend, the
  last two as one chain launch; the whole is checkpointed (only the input and the parameters are
  saved, the per-layer part is recomputed in backward), so saved memory stays rate-independent.
- FC: every row is a 1x1 image, the three Linear layers 1x1 convolutions.
Zero padding goes to the kernel (applied once at the unit's input, as ``python_ref`` does); other
padding modes are applied here first.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.utils.checkpoint

from expandnets_cuda.reference import ConvUnitSpec, pad_input
from expandnets_cuda.kernels.stages import autocast_inputs, exact_fp32

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
    if spec.padding_mode != "zeros" and not (spec.strategy == "ck" and len(weights) > 2):
        x, pads = pad_input(x, spec), [0, 0, 0, 0]
    dil = list(spec.dilation)
    if spec.strategy == "cl":
        return runner.chain(x, weights[0], biases[0], weights[1], biases[1], weights[2], biases[2],
                            pads, [1, 1], list(spec.stride), dil, spec.groups, relu, exact)
    if len(weights) == 2:
        return runner.chain(x, weights[0], biases[0], weights[1], biases[1], None, None,
                            pads, dil, list(spec.stride), dil, 1, relu, exact)

    def deep_ck(x, *params):  # CK deeper than two 3x3: per-layer first, the last two chained
        ws, bs = params[:len(weights)], (params[len(weights):] if spec.bias else [None] * len(weights))
        x = pad_input(x, spec)  # inside the checkpoint: only the unpadded input is saved
        for weight, bias in zip(ws[:-2], bs[:-2]):
            x = runner.conv2d(x, weight, bias, (1, 1), (0, 0), spec.dilation, 1)
            if relu:
                x = torch.relu(x)
        return runner.chain(x, ws[-2], bs[-2], ws[-1], bs[-1], None, None, [0, 0, 0, 0], dil, list(spec.stride),
                            dil, 1, relu, exact)

    params = [*weights, *(b for b in biases if b is not None)]
    if not torch.is_grad_enabled():
        return deep_ck(x, *params)
    return torch.utils.checkpoint.checkpoint(deep_ck, x, *params, use_reentrant=False)


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
