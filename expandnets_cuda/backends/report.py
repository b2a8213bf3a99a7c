"""``available_backends()``: every known backend with whether it runs here now, where, and if not,
why and how to get it."""
from __future__ import annotations

import textwrap
from typing import Callable, Dict, Sequence

import torch

from expandnets_cuda.backends import registry, triton_mode
from expandnets_cuda.backends.types import AUTO, REFERENCE, BackendInfo, BackendUnavailableError


class BackendReport(Dict[str, BackendInfo]):
    """``available_backends()``'s answer: a dict by name that prints as a table."""

    def __str__(self) -> str:
        width = max([len("backend"), *map(len, self)])
        lines = [f"{'backend':<{width}}  {'runs here':<9}  {'on':<9}  why not / how to get it / note"]
        indent = " " * (width + 2 + 9 + 2 + 9 + 2)
        for info in self.values():
            text = [f"why: {info.why_not}", f"fix: {info.fix}" if info.fix else ""] if not info.available \
                else [info.note]
            wrapped = [line for part in text if part
                       for line in textwrap.wrap(part, 72, subsequent_indent="     ")] or [""]
            on = ", ".join(info.devices) or "-"
            lines.append(f"{info.name:<{width}}  {'yes' if info.available else 'no':<9}  {on:<9}  {wrapped[0]}")
            lines += [indent + line for line in wrapped[1:]]
        return "\n".join(lines)

    __repr__ = __str__


def _info(name: str, impls: Callable[[], Sequence]) -> BackendInfo:
    """One backend's entry: ``impls`` loads its implementations (both stages, or a pair's two)."""
    try:
        loaded = impls()
    except BackendUnavailableError as err:
        return BackendInfo(name, False, err.reason, err.fix)
    devices = [set(registry.devices_now(impl)) for impl in loaded]
    order = [d for d in registry.devices_now(loaded[0]) if all(d in other for other in devices)]
    interpreted = any(impl.triton_kernels for impl in loaded) and triton_mode.interpreted()
    return BackendInfo(name, True, devices=tuple(order),
                       note="Triton kernels through the interpreter: slow, for tests" if interpreted else "")


def available_backends() -> BackendReport:
    """Every known backend with whether it runs on this machine now (a backend whose kernels need a
    device that is not here is not available), where, and if not, why and how to get it.

    The answer is a dict by name; ``print(available_backends())`` shows it as a table. Mixed pairs
    ``"<composer>+<convolver>"`` are listed where both stages run. ``auto`` notes the pairs it
    measures on each device.
    """
    report = BackendReport()
    report[REFERENCE] = BackendInfo(REFERENCE, True, devices=registry.devices_now(registry.load("convolver", "torch")),
                                    note="the unfused sub-layers of python_ref (the semantic definition)")
    composers, convolvers = registry.stage_names("composer"), registry.stage_names("convolver")
    for name in registry.backend_names():
        if name == REFERENCE:
            continue
        kinds = [kind for kind, names in (("composer", composers), ("convolver", convolvers)) if name in names]
        info = _info(name, lambda: [registry.load(kind, name) for kind in kinds])
        if len(kinds) == 1 and info.available:
            info = BackendInfo(name, True, devices=info.devices,
                               note="; ".join(filter(None, [f"{kinds[0]} only: use it in a pair", info.note])))
        report[name] = info
    for name in registry.chain_names():
        info = _info(name, lambda: [registry.load_chain(name)])
        report[name] = BackendInfo(name, info.available, info.reason, info.fix, info.devices, "; ".join(
            filter(None, ["a whole unit in chain-fused kernels", info.note]))) if info.available else info
    for composer in composers:
        for convolver in convolvers:
            pair = f"{composer}+{convolver}"
            if composer != convolver and pair not in report:
                info = _info(pair, lambda: [registry.load("composer", composer), registry.load("convolver", convolver)])
                if info.available and info.devices:
                    report[pair] = info
    measured = {device: [p.name for p in registry.candidate_pairs(torch.device(device))]
                for device in ("cpu", "cuda") if device == "cpu" or torch.cuda.is_available()}
    report[AUTO] = BackendInfo(AUTO, True, devices=tuple(measured), note="; ".join(
        f"on {device} picks from {', '.join(names)}" + (" (nothing to measure)" if len(names) == 1 else " (measured)")
        for device, names in measured.items()))
    return report
