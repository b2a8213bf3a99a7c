"""Which layers the paper expands in each network, so its parameter counts can be reproduced.

A ``PaperPreset`` names a model builder, a strategy and rate, and a rule that picks the layers to
expand; ``expand_paper(name)`` applies it with ``expand_model``. The layer choices follow the
authors' released model definitions (r = 4 everywhere, every expanded width = 4 x the compact
one, per group for depthwise convs: see ``python_ref.spec.expanded_width``):

- MobileNet (CIFAR, ImageNet) and ShuffleNetV2 0.5x: the stem and every depthwise conv (CL);
- MobileNetV2 ImageNet: the stem and the depthwise conv of the first block of each stride-2 stage (CL);
- the compact AlexNet: CK on its 11x11 and 5x5 kernels (``alexnet_compact_ck``), or CL on every conv.
``paper_params`` holds the paper's (compact, expanded) counts in millions where the paper gives
them (to its rounding: two decimals); ``None`` where it does not.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from torch import nn

from expandnets_cuda.models.alexnet import alexnet_compact
from expandnets_cuda.models.mobilenet_v1 import mobilenet_v1, mobilenet_v1_cifar
from expandnets_cuda.models.mobilenet_v2 import MOBILENET_V2_STAGES, mobilenet_v2, mobilenet_v2_cifar
from expandnets_cuda.models.shufflenet_v2 import shufflenet_v2_x0_5


def _convs(model: nn.Module) -> List[Tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def stem_and_depthwise(model: nn.Module) -> List[str]:
    """The first conv and every depthwise conv."""
    convs = _convs(model)
    return [convs[0][0]] + [n for n, m in convs[1:] if _is_depthwise(m)]


def stem_and_first_stride2_depthwise(model: nn.Module) -> List[str]:
    """MobileNetV2 (ImageNet): the stem and the depthwise conv opening each stride-2 stage."""
    names, index = [model_stem(model)], 0
    for _, _, count, stride in MOBILENET_V2_STAGES:
        if stride == 2:
            names.append(f"blocks.{index}.depthwise.0")
        index += count
    return names


def model_stem(model: nn.Module) -> str:
    return _convs(model)[0][0]


def large_kernels(model: nn.Module) -> List[str]:
    """Every conv with a kernel of 5x5 or more (what CK can expand)."""
    return [n for n, m in _convs(model) if min(m.kernel_size) >= 5]


def spatial_convs(model: nn.Module) -> List[str]:
    """Every conv with a kernel larger than 1x1 (what CL expands by default)."""
    return [n for n, m in _convs(model) if m.kernel_size != (1, 1)]


@dataclass(frozen=True)
class PaperPreset:
    name: str
    build: Callable[..., nn.Module]
    strategy: str
    layers: Callable[[nn.Module], List[str]]
    input_shape: Tuple[int, int, int]
    rate: float = 4
    paper_params: Optional[Tuple[float, float]] = None  # (compact, expanded), millions, the paper's rounding
    source: str = ""

    def layer_names(self, model: nn.Module) -> List[str]:
        return self.layers(model)

    def expand(self, model: Optional[nn.Module] = None, **kwargs) -> nn.Module:
        """``expand_model`` with this preset's strategy, rate and layers (``kwargs`` pass through,
        e.g. ``backend``, ``nonlinear``, ``inplace``); builds the compact model when none is given."""
        from expandnets_cuda.convert.model import expand_model  # conversion imports nothing from models
        model = self.build() if model is None else model
        kwargs.setdefault("rate", self.rate)
        return expand_model(model, self.strategy, layers=self.layer_names(model), **kwargs)


PAPER_PRESETS: Dict[str, PaperPreset] = {p.name: p for p in (
    PaperPreset("mobilenet_v1_cifar", mobilenet_v1_cifar, "cl", stem_and_depthwise, (3, 32, 32),
                paper_params=(3.22, 3.94), source="Table 2 (CIFAR-10, r=4)"),
    PaperPreset("mobilenet_v2_cifar", mobilenet_v2_cifar, "cl", stem_and_depthwise, (3, 32, 32),
                paper_params=(2.30, 3.12), source="Table 2 (CIFAR-10, r=4); convention not recovered, see docs/usage.md"),
    PaperPreset("mobilenet_v1", mobilenet_v1, "cl", stem_and_depthwise, (3, 224, 224),
                source="ImageNet, authors' model definition (stem + 13 depthwise)"),
    PaperPreset("mobilenet_v2", mobilenet_v2, "cl", stem_and_first_stride2_depthwise, (3, 224, 224),
                paper_params=(3.50, 3.67), source="ImageNet, r=4"),
    PaperPreset("shufflenet_v2_x0_5", shufflenet_v2_x0_5, "cl", stem_and_depthwise, (3, 224, 224),
                source="ImageNet, authors' model definition (stem + every depthwise)"),
    PaperPreset("alexnet_compact_ck", alexnet_compact, "ck", large_kernels, (3, 224, 224),
                source="our compact AlexNet (Table S6 reconstruction): CK on the 11x11 and 5x5 kernels"),
    PaperPreset("alexnet_compact_cl", alexnet_compact, "cl", spatial_convs, (3, 224, 224),
                source="our compact AlexNet (Table S6 reconstruction): CL on every conv"),
)}


def paper_preset(name: str) -> PaperPreset:
    if name not in PAPER_PRESETS:
        raise ValueError(f"name must be one of {tuple(PAPER_PRESETS)}, got {name!r}")
    return PAPER_PRESETS[name]


def expand_paper(name: str, model: Optional[nn.Module] = None, **kwargs) -> nn.Module:
    """The paper's ExpandNet of network ``name`` (a key of ``PAPER_PRESETS``)."""
    return paper_preset(name).expand(model, **kwargs)
