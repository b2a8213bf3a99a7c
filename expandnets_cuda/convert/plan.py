"""What ``expand_model`` does to each layer, decided before anything changes: the plan.

One ``LayerDecision`` per plain ``Conv2d``/``Linear`` of the model:
expanded how (CL/CK/FC with the sub-layer widths) or left compact and why. ``ExpansionPlan``
prints as one readable line per layer under a one-line summary, so a user sees at a glance
why a layer stayed compact (a 1x1 under CL, a kernel CK cannot take, a Linear with ``fc=False``,
a name missing from ``layers=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from torch import nn

from expandnets_cuda.reference.spec import ConvUnitSpec, LinearUnitSpec, ck_ineligibility

COMPACT = "compact"


def _pair(value) -> str:
    return f"{value[0]}x{value[1]}"


def describe_layer(module: nn.Module) -> str:
    """``Conv2d 32->64 3x3 s2 g32`` / ``Linear 256->64``: the compact layer in a few words."""
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    text = f"Conv2d {module.in_channels}->{module.out_channels} {_pair(module.kernel_size)}"
    if module.stride != (1, 1):
        text += f" s{module.stride[0]}" if module.stride[0] == module.stride[1] else f" s{_pair(module.stride)}"
    if module.dilation != (1, 1):
        text += f" d{module.dilation[0]}"
    if module.groups != 1:
        text += " dw" if module.groups == module.in_channels == module.out_channels else f" g{module.groups}"
    return text


def _conv_spec(conv: nn.Conv2d, strategy: str, rate: float) -> ConvUnitSpec:
    return ConvUnitSpec.create(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                               conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                               conv.padding_mode, strategy, rate)


def _conv_chain(spec: ConvUnitSpec) -> Tuple[str, int]:
    """The sub-layers in words (``1x1 32->128 | 3x3 128->128 s2 | 1x1 128->32, g32``) and their
    parameter count; a unit's sub-layers all share the compact layer's groups."""
    parts, params = [], 0
    for cin, cout, kernel, stride, groups in spec.layer_shapes():
        parts.append(f"{_pair(kernel)} {cin}->{cout}" + (f" s{stride[0]}" if stride != (1, 1) else ""))
        params += cout * (cin // groups) * kernel[0] * kernel[1] + (cout if spec.bias else 0)
    return " | ".join(parts) + (f", g{spec.groups}" if spec.groups != 1 else ""), params


def _linear_chain(spec: LinearUnitSpec) -> Tuple[str, int]:
    shapes = spec.layer_shapes()
    widths = [shapes[0][0]] + [b for _, b in shapes]
    params = sum(a * b + (b if spec.bias else 0) for a, b in shapes)
    return "->".join(map(str, widths)), params


@dataclass(frozen=True)
class LayerDecision:
    """``action`` is ``"cl"``, ``"ck"``, ``"fc"`` (expanded) or ``"compact"`` (left alone);
    ``detail`` gives the expanded widths or the reason it stays compact."""

    name: str
    layer: str
    action: str
    detail: str
    params: int  # the layer's parameters now
    params_expanded: int  # after the plan (== params when left compact)
    ineligible: bool = False  # selected, but the strategy cannot expand this layer (CK: kernel/groups)

    @property
    def expanded(self) -> bool:
        return self.action != COMPACT

    def line(self, name_width: int = 0, layer_width: int = 0) -> str:
        action = self.action.upper() if self.expanded else "compact"
        counts = f"  ({self.params:,} -> {self.params_expanded:,} params)" if self.expanded else ""
        return f"{self.name:<{name_width}}  {self.layer:<{layer_width}}  {action:<7}  {self.detail}{counts}"


class ExpansionPlan(Sequence[LayerDecision]):
    """The per-layer decisions of one ``expand_model`` call (a sequence of ``LayerDecision``)."""

    def __init__(self, decisions: Sequence[LayerDecision], strategy: Optional[str], rate: float, fc: bool):
        self.decisions: Tuple[LayerDecision, ...] = tuple(decisions)
        self.strategy, self.rate, self.fc = strategy, rate, fc

    def __getitem__(self, index):
        return self.decisions[index]

    def __len__(self) -> int:
        return len(self.decisions)

    def __iter__(self) -> Iterator[LayerDecision]:
        return iter(self.decisions)

    @property
    def expanded(self) -> List[str]:
        return [d.name for d in self.decisions if d.expanded]

    @property
    def compact(self) -> List[str]:
        return [d.name for d in self.decisions if not d.expanded]

    def decision(self, name: str) -> LayerDecision:
        for d in self.decisions:
            if d.name == name:
                return d
        raise KeyError(f"no layer named {name!r} in the plan")

    @property
    def added_params(self) -> int:
        return sum(d.params_expanded - d.params for d in self.decisions)

    def summary(self) -> str:
        strategy = repr(self.strategy) if self.strategy else "None"
        return (f"expand_model plan (strategy {strategy}, rate {self.rate:g}, fc={self.fc}): "
                f"{len(self.expanded)} of {len(self)} layer(s) expanded, {len(self.compact)} left compact, "
                f"{self.added_params:+,} parameters")

    def lines(self, decisions: Optional[Sequence[LayerDecision]] = None) -> List[str]:
        decisions = self.decisions if decisions is None else decisions
        name_width = max((len(d.name) for d in decisions), default=0)
        layer_width = max((len(d.layer) for d in decisions), default=0)
        return [d.line(name_width, layer_width) for d in decisions]

    def __str__(self) -> str:
        return "\n".join([self.summary(), *("  " + line for line in self.lines())])

    def __repr__(self) -> str:
        return f"<ExpansionPlan: {len(self.expanded)} of {len(self)} layers expanded>"


def decide(name: str, module: nn.Module, *, strategy: Optional[str], rate: float, fc: bool,
           selected: bool, named: Optional[set]) -> LayerDecision:
    """What ``expand_model`` does with one plain layer (``selected``: passed the ``layers=`` filter;
    ``named``: the names ``layers=`` gave, or ``None``)."""
    layer = describe_layer(module)
    params = sum(p.numel() for p in module.parameters())

    def compact(reason: str) -> LayerDecision:
        return LayerDecision(name, layer, COMPACT, reason, params, params)

    if not selected:
        return compact("not named in layers=" if named is not None else "excluded by the layers= filter")
    if isinstance(module, nn.Linear):
        if not fc:
            return compact("Linear: FC expansion is off (fc=True expands it)")
        spec = LinearUnitSpec.create(module.in_features, module.out_features, module.bias is not None, rate)
        detail, expanded = _linear_chain(spec)
        return LayerDecision(name, layer, "fc", detail, params, expanded)
    if strategy is None:
        return compact("strategy=None leaves convolutions alone")
    if strategy == "ck":
        reason = ck_ineligibility(module.kernel_size, module.groups)
        if reason:
            return LayerDecision(name, layer, COMPACT, reason, params, params, ineligible=True)
    elif module.kernel_size == (1, 1) and named is None:
        return compact("1x1 kernel: CL expands a 1x1 only when layers= names it")
    try:
        spec = _conv_spec(module, strategy, rate)
    except (TypeError, ValueError) as error:
        raise type(error)(f"layer {name!r} ({layer}) cannot be expanded: {error}") from error
    detail, expanded = _conv_chain(spec)
    return LayerDecision(name, layer, strategy, detail, params, expanded)

