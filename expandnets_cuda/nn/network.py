"""Network-level composition: one call composes every fused unit of a model for a step.

``expand_model`` installs a ``NetworkComposition`` on the model it returns: a forward pre-hook that,
when autograd is on, composes all fused units at once and stages each unit's ``(W_eff, b_eff)``;
each unit then takes its staged weight instead of composing alone (``FusedUnit._composed``).

* A composer with ``cl_network`` (the Triton and CUDA work-list kernels) composes *every* CL/FC unit
  it runs, whatever their shapes, in one call: a fixed number of launches forward and backward.
* Otherwise units of equal shapes that share a composer form one group, composed by one batched
  call (their parameters concatenated along the group dimension, which CL/FC composition already
  batches over). On a CPU only small units are batched so: there a call costs microseconds of
  dispatch, not a launch, and the concatenation would copy every parameter each step.
* A composer with ``ck_network`` likewise composes every CK unit in one call (one launch per fold
  level, not per unit); without it CK units compose one call each.

So on the kernel backends the launches a fused network adds per step do not grow with its depth.
Units still work alone: a unit without a staged weight (first step, evaluation, ``torch.compile``,
a model without the composer) composes itself. The training loop does not change: the hook runs
inside ``model(x)``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from expandnets_cuda.compose import Composed
from expandnets_cuda.nn.unit import (LAST_COMPOSER, STAGED, FusedUnit, autocast_off,  # noqa: F401 (STAGED: tests)
                                     compose_dtype, functorch_transforms_active, stage, unstage)

Tensor = torch.Tensor


def _strategy(unit: FusedUnit) -> str:
    return getattr(unit.spec, "strategy", "fc")


def _uses_cl_network(unit: FusedUnit, composer) -> bool:
    return composer.cl_network is not None and _strategy(unit) in ("cl", "fc")


def _uses_ck_network(unit: FusedUnit, composer) -> bool:
    return composer.ck_network is not None and _strategy(unit) == "ck"


def _group_key(unit: FusedUnit, composer) -> tuple:
    first = unit.layers[0]
    for kind, uses in (("cl_network", _uses_cl_network), ("ck_network", _uses_ck_network)):
        if uses(unit, composer):  # any shapes; one dtype, device and bias setting per call
            return (composer.name, kind, first.bias is not None, first.weight.dtype, first.weight.device)
    params = tuple((tuple(p.shape), p.dtype, p.device) for p in unit.layers.parameters())
    return (composer.name, type(unit).__name__, _strategy(unit), getattr(unit.spec, "groups", 1), params)


# On a CPU, units up to this many parameters are batched by concatenation: beyond it the copy of
# the parameters (and the split of their gradients) costs more than the calls it saves.
CPU_BATCH_MAX_PARAMS = 1 << 17


def _batchable(unit: FusedUnit, composer) -> bool:
    """CL/FC composition batches over groups, so equal units concatenate along that dimension."""
    if not composer.batches_groups or _strategy(unit) not in ("cl", "fc"):
        return False
    weight = unit.layers[0].weight
    return weight.device.type != "cpu" or sum(p.numel() for p in unit.layers.parameters()) <= CPU_BATCH_MAX_PARAMS


def _composes_in_one_call(units: List[FusedUnit], composer) -> bool:
    return (_uses_cl_network(units[0], composer) or _uses_ck_network(units[0], composer)
            or (len(units) > 1 and _batchable(units[0], composer)))


def _as_cl_args(unit: FusedUnit, weights, biases) -> tuple:
    """``cl``'s arguments for a unit: FC as a CL unit of one group and one tap."""
    b1, b2, b3 = biases if biases is not None else (None, None, None)
    if _strategy(unit) == "fc":
        weights = [w.reshape(*w.shape, 1, 1) for w in weights]
        return (weights[0], b1, weights[1], b2, weights[2], b3, 1)
    return (weights[0], b1, weights[1], b2, weights[2], b3, unit.spec.groups)


def _compose_network(composer, units: List[FusedUnit], dtype) -> List[Composed]:
    composed = composer.cl_network([_as_cl_args(unit, *unit._params(dtype)) for unit in units])
    return [(w.reshape(w.shape[0], w.shape[1]) if _strategy(unit) == "fc" else w, b)
            for unit, (w, b) in zip(units, composed)]


def _compose_group(composer, units: List[FusedUnit]) -> List[Composed]:
    """Every unit's ``(W_eff, b_eff)``: one call for a ``cl_network`` or batchable group."""
    first = units[0]
    dtype = compose_dtype(first.layers[0].weight.dtype)
    with autocast_off(first.layers[0].weight.device.type):
        if _uses_cl_network(first, composer):
            return _compose_network(composer, units, dtype)
        if _uses_ck_network(first, composer):
            return composer.ck_network([unit._params(dtype) for unit in units])
        if len(units) == 1 or not _batchable(first, composer):
            return [unit._compose_with(composer, *unit._params(dtype)) for unit in units]
        per_unit = [unit._params(dtype) for unit in units]
        fc = _strategy(first) == "fc"
        # Concatenated along dim 0, each unit is a block of groups; FC is CL with one group, one tap.
        weights = [torch.cat([w[j] for w, _ in per_unit]) for j in range(3)]
        if fc:
            weights = [w.reshape(*w.shape, 1, 1) for w in weights]
        b1, b2, b3 = ((None, None, None) if per_unit[0][1] is None
                      else [torch.cat([b[j] for _, b in per_unit]) for j in range(3)])
        groups = 1 if fc else first.spec.groups
        weight, bias = composer.cl(weights[0], b1, weights[1], b2, weights[2], b3, groups * len(units))
        weight_chunks = weight.chunk(len(units))
        if fc:
            weight_chunks = [w.reshape(w.shape[0], w.shape[1]) for w in weight_chunks]
        bias_chunks = bias.chunk(len(units)) if bias is not None else [None] * len(units)
        return list(zip(weight_chunks, bias_chunks))


class NetworkComposition:
    """Composes every (linear) fused unit of ``model`` in one call per forward; see the module doc.

    ``compose()`` may also be called by hand; ``remove()`` uninstalls the hooks."""

    def __init__(self, model: nn.Module):
        self.units: List[FusedUnit] = [m for m in model.modules() if isinstance(m, FusedUnit) and not m.nonlinear]
        self._handles = [model.register_forward_pre_hook(self._before_forward),
                         model.register_forward_hook(self._after_forward)]

    def groups(self) -> Dict[tuple, Tuple[object, List[FusedUnit]]]:
        """Units that ran with a composer before, grouped by (composer, kind, shapes)."""
        grouped: Dict[tuple, Tuple[object, List[FusedUnit]]] = {}
        for unit in self.units:
            composer = unit.__dict__.get(LAST_COMPOSER)
            if composer is None:
                continue
            key = _group_key(unit, composer)
            grouped.setdefault(key, (composer, []))[1].append(unit)
        return grouped

    def compose(self) -> int:
        """Stage ``(W_eff, b_eff)`` on every unit; returns the number of composition calls made."""
        calls = 0
        with torch.profiler.record_function("expandnets::network_compose"):
            calls = self._compose_groups()
        return calls

    def _compose_groups(self) -> int:
        calls = 0
        for composer, units in self.groups().values():
            for unit, composed in zip(units, _compose_group(composer, units)):
                stage(unit, composer.name, composed)
            calls += 1 if _composes_in_one_call(units, composer) else len(units)
        return calls

    def clear(self) -> None:
        for unit in self.units:
            unstage(unit)  # this thread's; another thread's forward keeps its own

    def _before_forward(self, module, args):
        # Under torch.func transforms the units run as the unfused chain: nothing to stage.
        if torch.is_grad_enabled() and not torch.compiler.is_compiling() and not functorch_transforms_active():
            self.compose()

    def _after_forward(self, module, args, output):
        if not torch.compiler.is_compiling():
            self.clear()  # a unit the forward skipped must not keep a stale graph alive

    def remove(self) -> None:
        self.clear()
        for handle in self._handles:
            handle.remove()


def install(model: nn.Module) -> Optional[NetworkComposition]:
    """Install (or re-install) a ``NetworkComposition`` on ``model``; ``None`` if it has no fused units."""
    previous = model.__dict__.get("_network_composer")
    if previous is not None:
        previous.remove()
    composer = NetworkComposition(model)
    if not composer.units:
        composer.remove()
        model.__dict__.pop("_network_composer", None)
        return None
    model.__dict__["_network_composer"] = composer
    return composer
