"""Argument normalisation and validation shared by the reference units and the fused modules.

This file decides what an expanded unit *is* (its sub-layer widths, where padding goes, how a
non-integer rate rounds); everything else in the project reads those decisions from here, so the
reference and the fast paths cannot disagree about shapes.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

STRATEGIES = ("cl", "ck")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

IntPair = Tuple[int, int]
INT64_MAX = 2**63 - 1  # torch's sizes, strides and paddings are int64


def _int_pair(value, name: str, minimum: int) -> IntPair:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got bool")
    if isinstance(value, numbers.Integral):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum or max(pair) > INT64_MAX:
        raise ValueError(f"{name} must be >= {minimum} and <= 2**63 - 1, got {value!r}")
    return pair


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= INT64_MAX:
        raise ValueError(f"{name} must be >= 1 and <= 2**63 - 1, got {value}")
    return int(value)


def check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate must be a real number >= 1, got {type(rate).__name__}")
    if not math.isfinite(float(rate)) or rate < 1:
        raise ValueError(f"rate must be a finite number >= 1, got {rate!r}")
    return float(rate)


def check_flag(value, name: str) -> bool:
    """A bool argument (``nonlinear``; ``bias`` likewise): anything else is refused, not read as truthy."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_expandable(rate: float, groups: int, **channels) -> None:
    """Every expanded width must be a size a tensor can have (else Python or torch overflows)."""
    for name, count in channels.items():
        if not rate * (count // groups) + 0.5 < INT64_MAX // groups:
            raise ValueError(f"rate={rate!r} expands {name}={count} beyond the largest tensor size (2**63 - 1)")


def expanded_width(channels: int, rate: float, groups: int = 1) -> int:
    """Width of an expanded sub-layer: ``groups * round_half_up(rate * channels / groups)``.

    Rounding is per group so that every expanded width stays divisible by ``groups``; an integer
    rate gives exactly ``rate * channels``, and ``rate >= 1`` never shrinks a layer.
    """
    per_group = channels // groups
    return groups * max(per_group, int(math.floor(rate * per_group + 0.5)))


def _resolve_padding(padding, kernel: IntPair, stride: IntPair, dilation: IntPair):
    """Return ``(left, right, top, bottom)`` for ``F.pad`` from an ``nn.Conv2d``-style padding."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions (stride != 1)")
            # PyTorch's convention: the odd extra pixel of an even total goes to the right/bottom.
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    ph, pw = _int_pair(padding, "padding", 0)
    return (pw, pw, ph, ph)


@dataclass(frozen=True)
class ConvUnitSpec:
    """Everything that defines an expanded convolution unit (CL or CK) of a compact ``Conv2d``."""

    in_channels: int
    out_channels: int
    kernel_size: IntPair
    stride: IntPair
    padding: Union[str, IntPair]  # as nn.Conv2d takes it, for the contracted layer
    pad: Tuple[int, int, int, int]  # (left, right, top, bottom), applied once to the unit's input
    dilation: IntPair
    groups: int
    bias: bool
    padding_mode: str
    strategy: str
    rate: float

    @classmethod
    def create(cls, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
               groups=1, bias=True, padding_mode="zeros", strategy="cl", rate=4) -> "ConvUnitSpec":
        in_channels = _positive_int(in_channels, "in_channels")
        out_channels = _positive_int(out_channels, "out_channels")
        kernel = _int_pair(kernel_size, "kernel_size", 1)
        stride = _int_pair(stride, "stride", 1)
        dilation = _int_pair(dilation, "dilation", 1)
        groups = _positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        strategy = strategy.lower()
        rate = check_rate(rate)
        _check_expandable(rate, groups, in_channels=in_channels, out_channels=out_channels)
        pad = _resolve_padding(padding, kernel, stride, dilation)
        if strategy == "ck":
            reason = ck_ineligibility(kernel, groups)
            if reason:
                raise ValueError(f"kernel_size/groups: {reason}")
        if not isinstance(padding, str):
            padding = _int_pair(padding, "padding", 0)
        return cls(in_channels, out_channels, kernel, stride, padding, pad, dilation, groups, bias,
                   padding_mode, strategy, rate)

    def layer_shapes(self):
        """``(in, out, kernel, stride, groups)`` of each sub-layer, in order (dilation: every kxk/3x3)."""
        m, n, g = self.in_channels, self.out_channels, self.groups
        if self.strategy == "cl":
            rm, rn = expanded_width(m, self.rate, g), expanded_width(n, self.rate, g)
            return [(m, rm, (1, 1), (1, 1), g),
                    (rm, rn, self.kernel_size, self.stride, g),
                    (rn, n, (1, 1), (1, 1), g)]
        depth = (self.kernel_size[0] - 1) // 2
        rm, rn = expanded_width(m, self.rate), expanded_width(n, self.rate)
        widths = [m, rm] + [rn] * (depth - 2) + [n]  # k=5: m -> rm -> n
        last = len(widths) - 2
        return [(widths[i], widths[i + 1], (3, 3), self.stride if i == last else (1, 1), 1)
                for i in range(len(widths) - 1)]

    @property
    def symmetric_zero_padding(self) -> Optional[IntPair]:
        """``(ph, pw)`` if the padding can be handed to ``conv2d`` directly, else ``None``."""
        left, right, top, bottom = self.pad
        if self.padding_mode == "zeros" and left == right and top == bottom:
            return (top, left)
        return None


def ck_ineligibility(kernel: IntPair, groups: int) -> Optional[str]:
    """Why CK cannot expand this convolution, or ``None`` if it can."""
    if kernel[0] != kernel[1] or kernel[0] < 5 or kernel[0] % 2 == 0:
        return f"CK needs a square odd kernel of size >= 5, got {kernel[0]}x{kernel[1]}"
    if groups != 1:
        return f"CK needs groups=1, got groups={groups}"
    return None


def pad_input(x: torch.Tensor, spec: ConvUnitSpec) -> torch.Tensor:
    """Pad once, at the unit's input: the convention under which contraction is exact."""
    if not any(spec.pad):
        return x
    mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
    return torch.nn.functional.pad(x, spec.pad, mode=mode)


@dataclass(frozen=True)
class LinearUnitSpec:
    """An FC expansion ``a -> r*a -> r*b -> b`` of a compact ``Linear(a, b)``."""

    in_features: int
    out_features: int
    bias: bool
    rate: float

    @classmethod
    def create(cls, in_features, out_features, bias=True, rate=4) -> "LinearUnitSpec":
        in_features = _positive_int(in_features, "in_features")
        out_features = _positive_int(out_features, "out_features")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        rate = check_rate(rate)
        _check_expandable(rate, 1, in_features=in_features, out_features=out_features)
        return cls(in_features, out_features, bias, rate)

    def layer_shapes(self):
        a, b = self.in_features, self.out_features
        ra, rb = expanded_width(a, self.rate), expanded_width(b, self.rate)
        return [(a, ra), (ra, rb), (rb, b)]
