"""The layers to benchmark: every distinct expandable conv of the paper's CIFAR models."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from expandnets_cuda.models import mobilenet_v2_cifar, smallnet3, smallnet7
from expandnets_cuda.reference import ck_ineligibility

MODELS: Dict[str, Callable[[], nn.Module]] = {
    "smallnet7": smallnet7, "smallnet3": smallnet3, "mobilenet_v2": mobilenet_v2_cifar}


@dataclass(frozen=True)
class LayerCase:
    model: str
    name: str
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    groups: int
    bias: bool
    input_chw: Tuple[int, int, int]

    @property
    def label(self) -> str:
        kind = "dw" if self.groups == self.in_channels == self.out_channels and self.groups > 1 else "conv"
        k, s = self.kernel_size[0], self.stride[0]
        return (f"{self.model}:{self.name} {kind} {self.in_channels}->{self.out_channels} k{k} s{s} "
                f"@{self.input_chw[1]}x{self.input_chw[2]}")

    def conv_kwargs(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    groups=self.groups, bias=self.bias)

    def strategies(self, wanted) -> List[str]:
        """CL applies to every case here; CK only to odd square kernels >= 5 with groups=1."""
        return [s for s in wanted if s == "cl" or ck_ineligibility(self.kernel_size, self.groups) is None]


def layer_cases(model_name: str, input_size: int = 32) -> List[LayerCase]:
    """Distinct convs with a kernel larger than 1x1 (what CL expands by default), in network order."""
    model = MODELS[model_name]().eval()
    seen, cases = set(), []

    def hook(name):
        def record(module: nn.Conv2d, inputs, _output):
            case = LayerCase(model_name, name, module.in_channels, module.out_channels, module.kernel_size,
                             module.stride, module.padding, module.groups, module.bias is not None,
                             tuple(inputs[0].shape[1:]))
            signature = (case.in_channels, case.out_channels, case.kernel_size, case.stride, case.padding,
                         case.groups, case.bias, case.input_chw)
            if signature not in seen:
                seen.add(signature)
                cases.append(case)
        return record

    for name, module in model.named_modules():
        if type(module) is nn.Conv2d and module.kernel_size != (1, 1):
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    return cases
