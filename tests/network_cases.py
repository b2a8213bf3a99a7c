"""Small networks and step checks shared by the network-composition tests (tests/nn) and the
work-list kernel tests (tests/kernels/triton)."""
import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import expandnets_cuda as ec
from bench.launches import count_step_launches
from expandnets_cuda.nn import network as network_composition
from helpers import REL_TOL, assert_rel_close


def chain_net(depth: int, channels: int = 6, kernel=(3, 3)) -> nn.Module:
    """``depth`` equal convs (so the units share one shape) and a Linear head, for 6x6 inputs."""
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2)), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * 6 * 6, 5))


def mixed_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.Conv2d(6, 6, 5, padding=2), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(6 * 6 * 6, 7),
                         nn.ReLU(), nn.Linear(7, 7), nn.ReLU(), nn.Linear(7, 4))


def without_network_composition(model: nn.Module) -> nn.Module:
    alone = copy.deepcopy(model)
    network_composition.install(alone).remove()
    return alone


def step_grads(model, x):
    y = model(x)
    return y, torch.autograd.grad(y.square().sum(), list(model.parameters()))


def as_reference(model: nn.Module) -> nn.Module:
    """``model``'s units as the unfused chain (a copy without the network composer)."""
    reference = without_network_composition(model)
    for unit in reference.modules():
        if isinstance(unit, (ec.FusedExpandConv2d, ec.FusedExpandLinear)):
            unit.backend = "reference"
    return reference


def assert_steps_match(fused: nn.Module, others, x: torch.Tensor) -> None:
    """Two steps (the first records each unit's composer; the second composes as a network): the
    same outputs and gradients of every parameter as each of ``others``."""
    for step in range(2):
        y, grads = step_grads(fused, x)
        for other in others:
            y_other, grads_other = step_grads(other, x)
            assert_rel_close(y, y_other, REL_TOL[torch.float64], f"step {step} output")
            for (name, _), g, g_other in zip(fused.named_parameters(), grads, grads_other):
                assert_rel_close(g, g_other, REL_TOL[torch.float64], f"step {step} grad {name}")


def triton_added_launches(strategy: str, depths, channels: int, kernel, rate: float, label: str, **expand):
    """Launches (and library ops) the Triton backend adds per training step to ``chain_net`` at each
    depth, and at the last depth the network-composed gradients against the units composing alone."""
    info = ec.available_backends().get("triton")
    if info is None or not info.available:
        pytest.skip(f"triton backend unavailable: {getattr(info, 'reason', '')}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1, channels, 6, 6, dtype=torch.float64, device=device)
    y = torch.randint(0, 5, (1,), device=device)
    added, library = [], []
    for depth in depths:
        torch.manual_seed(depth)
        compact = chain_net(depth, channels, kernel).double().to(device)
        fused = ec.expand_model(compact, strategy, rate, backend="triton+torch", **expand)
        launches = count_step_launches(fused, x, y)
        added.append(launches["launches"] - count_step_launches(compact, x, y)["launches"])
        library.append(launches["library_ops"])
        if depth == depths[-1]:  # the network-composed step against the units composing alone
            _, grads = step_grads(fused, x)
            _, grads_alone = step_grads(without_network_composition(fused), x)
            for (name, _), g, g_alone in zip(fused.named_parameters(), grads, grads_alone):
                assert_rel_close(g, g_alone, REL_TOL[torch.float64], f"{label} grad {name}")
    return added, library


class NoHostSync(TorchDispatchMode):
    """Fails on every operator that needs a tensor's value on the host (``.item()``, ``bool()``,
    data-dependent shapes), i.e. what breaks CUDA graph capture or forces a sync."""

    FORBIDDEN = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "nonzero_static", "unique",
                 "_unique2", "masked_select", "equal", "allclose", "_assert_async"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        assert name not in self.FORBIDDEN, f"{func} needs a value on the host (breaks CUDA graph capture)"
        return func(*args, **(kwargs or {}))
