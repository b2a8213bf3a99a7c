"""The paper's models in each of their training forms, described by a JSON-able ``Architecture``
so a saved network can be rebuilt from its checkpoint without unpickling any object.

Forms: ``compact`` (the model as is), ``cl`` / ``ck`` (convolutions expanded), ``fc`` (linear
layers expanded, Arora et al.'s over-parameterisation), ``cl+fc`` / ``ck+fc`` (both).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from expandnets_cuda import models
from expandnets_cuda.backends.registry import nonlinear_names
from expandnets_cuda.convert.model import EXPANDED_TYPES, expand_model

MODELS = {"smallnet3": models.smallnet3, "smallnet7": models.smallnet7,
          "mobilenet_v2_cifar": models.mobilenet_v2_cifar}
# form -> (conv strategy or None, expand the Linear layers)
FORMS: Dict[str, Tuple[Optional[str], bool]] = {
    "compact": (None, False), "cl": ("cl", False), "ck": ("ck", False), "fc": (None, True),
    "cl+fc": ("cl", True), "ck+fc": ("ck", True),
}


@dataclass(frozen=True)
class Architecture:
    """What network to build: ``model`` in ``form`` at ``rate`` for ``num_classes`` classes of
    ``in_channels`` x ``input_size`` x ``input_size`` images; ``nonlinear`` builds the "+Init"
    counterpart (ReLU between the expanded sub-layers)."""

    model: str
    form: str
    rate: float
    num_classes: int
    in_channels: int
    input_size: int
    nonlinear: bool = False

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {tuple(MODELS)}, got {self.model!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {tuple(FORMS)}, got {self.form!r}")
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not self.rate >= 1:
            raise ValueError(f"rate must be a number >= 1, got {self.rate!r}")
        for name in ("num_classes", "in_channels", "input_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.nonlinear and self.form == "compact":
            raise ValueError("a compact network has no nonlinear counterpart (nonlinear=True needs an expanded form)")
        object.__setattr__(self, "rate", float(self.rate))

    @property
    def expanded(self) -> bool:
        return self.form != "compact"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        if not isinstance(data, Mapping):
            raise ValueError(f"an architecture must be a dict, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown architecture field(s) {unknown}; expected {sorted(fields)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"incomplete architecture {dict(data)}: {exc}") from exc

    def replace(self, **changes) -> "Architecture":
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        form = self.form if not self.expanded else f"{self.form} r={self.rate:g}"
        return f"{self.model} {form}" + (" (nonlinear counterpart)" if self.nonlinear else "")


def build_model(arch: Architecture, backend: str = "auto", device: Optional[torch.device] = None) -> nn.Module:
    """A freshly initialised network of ``arch`` (expanded units on ``backend``), on ``device``."""
    kwargs = {"num_classes": arch.num_classes, "in_channels": arch.in_channels}
    if arch.model != "mobilenet_v2_cifar":  # MobileNetV2 pools globally: any input size
        kwargs["input_size"] = arch.input_size
    model = MODELS[arch.model](**kwargs)
    strategy, fc = FORMS[arch.form]
    if arch.expanded:
        # Layers the strategy cannot expand (CK: kernels < 5) stay compact; expand_model warns.
        # A nonlinear counterpart has no composed form: it runs through the chain-fused kernels
        # (the backend asked for where it has them; "auto" picks them on CUDA, else the unfused chain).
        nonlinear_backend = backend if backend in nonlinear_names() else "auto"
        model = expand_model(model, strategy, arch.rate, fc=fc, nonlinear=arch.nonlinear,
                             backend=nonlinear_backend if arch.nonlinear else backend, inplace=True)
        if not any(isinstance(m, EXPANDED_TYPES) for m in model.modules()):
            raise ValueError(f"form {arch.form!r} expands no layer of {arch.model} (CK needs odd kernels >= 5; "
                             "smallnet3 and mobilenet_v2_cifar have none)")
    return model.to(device) if device is not None else model
