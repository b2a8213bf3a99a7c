"""Whole-network conversion: ``expand_model``, ``contract_model`` and ``init_from_nonlinear``."""
from __future__ import annotations

import copy
import logging
import warnings
from typing import Callable, Dict, Iterable, Optional, Tuple, Union

import torch
from torch import nn

from expandnets_cuda import reference as python_ref
from expandnets_cuda.reference.spec import STRATEGIES, check_rate
from expandnets_cuda.nn.conv import FusedExpandConv2d
from expandnets_cuda.nn.linear import FusedExpandLinear
from expandnets_cuda.convert.plan import ExpansionPlan, decide

logger = logging.getLogger(__name__)

LayerFilter = Union[None, Iterable[str], Callable[[str, nn.Module], bool]]
EXPANDED_TYPES = (FusedExpandConv2d, FusedExpandLinear, python_ref.ExpandedConv2d, python_ref.ExpandedLinear)


class ExpansionWarning(UserWarning):
    """``expand_model`` expanded nothing, or left selected layers compact that its strategy cannot expand."""

# Lines of per-layer detail a warning shows before it says "... and N more".
WARNING_LINES = 12


def _make_filter(layers: LayerFilter) -> Tuple[Callable[[str, nn.Module], bool], Optional[set]]:
    if layers is None:
        return (lambda name, module: True), None
    if callable(layers):
        return layers, None
    if isinstance(layers, str):
        raise TypeError("layers must be a callable(name, module) or an iterable of module names, not a str")
    names = set(layers)
    return (lambda name, module: name in names), names


def _leaf_layers(model: nn.Module):
    """``(name, module)`` of every plain Conv2d/Linear, not descending into expanded units."""
    def walk(module: nn.Module, prefix: str):
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            if isinstance(child, EXPANDED_TYPES):
                continue
            if type(child) in (nn.Conv2d, nn.Linear):  # exact types: subclasses may mean something else
                yield name, child
            else:
                yield from walk(child, name)
    yield from walk(model, "")


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _expanded_conv(conv: nn.Conv2d, strategy: str, rate: float, nonlinear: bool, backend: str):
    w = conv.weight
    unit = FusedExpandConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                             conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                             conv.padding_mode, strategy=strategy, rate=rate, nonlinear=nonlinear,
                             backend=backend, device=w.device, dtype=w.dtype)
    return unit.train(conv.training)


def _expanded_linear(linear: nn.Linear, rate: float, nonlinear: bool, backend: str):
    w = linear.weight
    unit = FusedExpandLinear(linear.in_features, linear.out_features, linear.bias is not None,
                             rate=rate, nonlinear=nonlinear, backend=backend, device=w.device, dtype=w.dtype)
    return unit.train(linear.training)


def plan_expansion(model: nn.Module, strategy: Optional[str] = "cl", rate: float = 4,
                   layers: LayerFilter = None, fc: bool = False) -> ExpansionPlan:
    """What ``expand_model`` would do with each plain Conv2d/Linear of ``model``, changing nothing.

    ``print(plan)`` shows one line per layer: expanded how (CL/CK/FC and the sub-layer widths) or
    left compact and why. Arguments as ``expand_model``'s.
    """
    if strategy is not None and (not isinstance(strategy, str) or strategy.lower() not in STRATEGIES):
        raise ValueError(f"strategy must be one of {STRATEGIES} or None, got {strategy!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(fc, bool):
        raise TypeError(f"fc must be a bool, got {type(fc).__name__}")
    rate = check_rate(rate)
    strategy = strategy.lower() if strategy else None
    selected, named = _make_filter(layers)
    leaves = list(_leaf_layers(model))
    if named is not None:
        unknown = sorted(named - {name for name, _ in leaves})
        if unknown:
            raise ValueError(f"layers names modules that are not plain Conv2d/Linear layers of the model: {unknown}")
    decisions = [decide(name, module, strategy=strategy, rate=rate, fc=fc, selected=selected(name, module),
                        named=named) for name, module in leaves]
    return ExpansionPlan(decisions, strategy, rate, fc)


def _warning_text(plan: ExpansionPlan, headline: str, decisions) -> str:
    """A summary line, how many layers each reason holds back, then one line per layer (capped)."""
    counts: Dict[str, int] = {}
    for d in decisions:
        counts[d.detail] = counts.get(d.detail, 0) + 1
    lines = [f"{n:>4} x {reason}" for reason, n in counts.items()] if len(counts) > 1 else []
    lines += plan.lines(decisions[:WARNING_LINES])
    if len(decisions) > WARNING_LINES:
        lines.append(f"... and {len(decisions) - WARNING_LINES} more (print(ec.plan_expansion(...)) lists every layer)")
    return "\n".join([headline, *("  " + line for line in lines)])


def _warn_about(plan: ExpansionPlan) -> None:
    if not len(plan):
        warnings.warn("expand_model expanded nothing: the model has no plain Conv2d/Linear below its root "
                      "(it replaces sub-modules; wrap a bare layer in nn.Sequential, or use FusedExpandConv2d)",
                      ExpansionWarning, stacklevel=3)
        return
    if not plan.expanded:
        headline = (f"expand_model expanded nothing (strategy {plan.strategy!r}, fc={plan.fc}): "
                    f"all {len(plan)} Conv2d/Linear layer(s) stay compact")
        warnings.warn(_warning_text(plan, headline, list(plan)), ExpansionWarning, stacklevel=3)
        return
    cannot = [d for d in plan if d.ineligible]
    if cannot:
        headline = (f"expand_model: strategy {plan.strategy!r} cannot expand {len(cannot)} selected layer(s); "
                    f"they stay compact ({len(plan.expanded)} other(s) expanded)")
        warnings.warn(_warning_text(plan, headline, cannot), ExpansionWarning, stacklevel=3)


def expand_model(model: nn.Module, strategy: Optional[str] = "cl", rate: float = 4,
                 layers: LayerFilter = None, fc: bool = False, *, nonlinear: bool = False,
                 backend: str = "auto", inplace: bool = False,
                 dry_run: bool = False) -> Union[nn.Module, ExpansionPlan]:
    """Replace the eligible layers of ``model`` by freshly initialised expanded units.

    strategy: ``"cl"``, ``"ck"`` or ``None`` (leave convolutions alone, e.g. for FC only).
      CL expands every ``nn.Conv2d`` with a kernel larger than 1x1 (a 1x1 conv is expanded only if
      ``layers`` names it); CK expands odd square kernels >= 5 with groups=1 and warns
      (``ExpansionWarning``) about the selected ones it cannot expand.
    rate: expansion rate (>= 1). fc: also expand ``nn.Linear`` layers (FC strategy).
    layers: which layers to consider: ``None`` (all), an iterable of qualified module names, or a
      ``callable(name, module) -> bool``.
    nonlinear: build the nonlinear counterparts (ReLU between sub-layers) for "+Init".
    backend: the backend of every new unit. inplace: modify ``model`` instead of a deep copy.
    dry_run: return the ``ExpansionPlan`` (``plan_expansion``) and leave ``model`` untouched.

    The returned model carries its plan as ``model.expansion_plan`` (``print`` it: one line per
    layer, expanded how or left compact and why); the plan is also logged at INFO level. Warns
    (``ExpansionWarning``) when nothing at all is expanded.
    """
    plan = plan_expansion(model, strategy, rate, layers, fc)
    if dry_run:
        logger.info("%s", plan)
        return plan
    if not inplace:
        model = copy.deepcopy(model)
    for decision in plan:
        if not decision.expanded:
            continue
        module = model.get_submodule(decision.name)
        if decision.action == "fc":
            new = _expanded_linear(module, plan.rate, nonlinear, backend)
        else:
            new = _expanded_conv(module, decision.action, plan.rate, nonlinear, backend)
        _set_submodule(model, decision.name, new)
    _warn_about(plan)
    logger.info("%s", plan)
    model.expansion_plan = plan
    from expandnets_cuda.nn import network as network_composition  # one composition call per step for all units; units still work alone
    network_composition.install(model)
    return model


def contract_model(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace every expanded unit by its compact ``nn.Conv2d`` / ``nn.Linear`` (exact, float64
    composition); the result's eval-mode outputs equal the expanded network's."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, EXPANDED_TYPES):
        return model.contract()
    if not inplace:
        model = copy.deepcopy(model)
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, EXPANDED_TYPES)]
    nonlinear = [name for name, m in units if m.nonlinear]
    if nonlinear:
        raise ValueError(f"model holds nonlinear counterparts that cannot be contracted: {nonlinear}")
    for name, unit in units:
        if any(name.startswith(done + ".") for done, _ in units if done != name):
            continue  # nested inside another unit (never built by expand_model)
        _set_submodule(model, name, unit.contract().train(unit.training))
    return model


@torch.no_grad()
def init_from_nonlinear(expandnet: nn.Module, nonlinear: nn.Module) -> nn.Module:
    """The paper's "+Init": copy a trained nonlinear counterpart's weights into the ExpandNet.

    Both must come from the same compact model by ``expand_model`` with the same strategy and rate
    (``nonlinear=True`` for the second). Every parameter and buffer is copied (expanded units, BN,
    the layers left compact); ``expandnet`` is modified and returned.
    """
    for arg, value in (("expandnet", expandnet), ("nonlinear", nonlinear)):
        if not isinstance(value, nn.Module):
            raise TypeError(f"{arg} must be an nn.Module, got {type(value).__name__}")
    linear_units = {n: m for n, m in expandnet.named_modules() if isinstance(m, EXPANDED_TYPES)}
    relu_units = {n: m for n, m in nonlinear.named_modules() if isinstance(m, EXPANDED_TYPES)}
    if linear_units.keys() != relu_units.keys():
        raise ValueError("expandnet and nonlinear have expanded units at different places: "
                         f"{sorted(linear_units.keys() ^ relu_units.keys())}")
    for name, unit in linear_units.items():
        other = relu_units[name]
        if unit.nonlinear or not other.nonlinear:
            raise ValueError(f"unit {name!r}: expected a linear unit in expandnet and a nonlinear one in nonlinear")
        if unit.spec != other.spec:
            raise ValueError(f"unit {name!r} differs between the networks: {unit.spec} vs {other.spec}")
    source, target = nonlinear.state_dict(), expandnet.state_dict()
    if source.keys() != target.keys():
        raise ValueError(f"the networks' state_dicts differ in keys: {sorted(source.keys() ^ target.keys())}")
    for key, value in source.items():
        if value.shape != target[key].shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} in nonlinear, {tuple(target[key].shape)} in expandnet")
    expandnet.load_state_dict(source)
    return expandnet
