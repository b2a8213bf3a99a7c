"""Parameter and multiply-add counts of a network's training (expanded) and test (contracted) forms.

MAC convention: multiply-adds of convolution and linear layers only, per image, for the form as it
is *defined* (the unfused chain for an expanded unit, whatever backend it runs on):
``conv: H_out * W_out * C_out * (C_in / groups) * kh * kw``, ``linear: out_features * in_features``
(times any leading non-batch dimensions). Biases, BatchNorm, activations and pooling are not
counted. Parameters are ``numel`` of every parameter (BatchNorm's affine included, running
statistics not), which is how the paper's Table 1 counts them.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from expandnets_cuda.convert.model import EXPANDED_TYPES, contract_model
from expandnets_cuda.nn.unit import FusedUnit


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds per image of one forward pass, computed on the meta device (no real compute)."""
    probe = copy.deepcopy(model).to("meta").eval()
    for module in probe.modules():
        if isinstance(module, FusedUnit) and not module.nonlinear:
            module.backend = "reference"  # count the chain the unit stands for
    total = [0]

    def conv_hook(module: nn.Conv2d, _inputs, output):
        kh, kw = module.kernel_size
        total[0] += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output):
        total[0] += output[0].numel() * module.in_features

    for module in probe.modules():
        if type(module) is nn.Conv2d:
            module.register_forward_hook(conv_hook)
        elif type(module) is nn.Linear:
            module.register_forward_hook(linear_hook)
    dtype = next((p.dtype for p in probe.parameters()), torch.float32)
    with torch.no_grad():
        probe(torch.empty((1, *input_shape), device="meta", dtype=dtype))
    return total[0]


def complexity(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, Optional[Dict[str, int]]]:
    """``{"train": {"params", "macs"}, "test": {"params", "macs"} or None}`` for one image of
    ``input_shape`` = ``(C, H, W)`` (a leading batch dimension is ignored). ``test`` is ``None``
    when the model holds nonlinear counterparts, which cannot be contracted."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {tuple(input_shape)}")
    train = {"params": count_params(model), "macs": count_macs(model, shape)}
    if any(isinstance(m, EXPANDED_TYPES) and m.nonlinear for m in model.modules()):
        return {"train": train, "test": None}
    compact = contract_model(model)
    return {"train": train, "test": {"params": count_params(compact), "macs": count_macs(compact, shape)}}
