"""What a backend is made of, and how it says it cannot run: the records the registry holds and
the kernel packages build. Imports nothing of the package, so every part of it may import this.

A fused unit runs in two stages (docs/design.md section 3): a ``Composer`` turns the expanded
parameters into the compact ``(W_eff, b_eff)`` and a ``Convolver`` runs the one compact-size
convolution; a ``ChainRunner`` instead runs the whole unit in chain-fused kernels (no composition).
What an implementation can do is a field of its record, never read from its name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch

REFERENCE = "reference"  # the unfused sub-layers of python_ref: no composition at all
AUTO = "auto"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here; the message says why and how to get it.

    ``BackendUnavailableError(reason, fix="", backend="")``: ``reason`` is why; ``fix`` how to get
    it, where the raiser gave it separately (the message then ends with it, unless the reason
    already says it); ``backend`` the name asked for, which the registry adds to the message.
    No ``__init__`` of its own: loaders raise it while torch.compile traces, and Dynamo builds
    exceptions with the plain ``RuntimeError`` constructor.
    """

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def fix(self) -> str:
        return self.args[1] if len(self.args) > 1 else ""

    @property
    def backend(self) -> str:
        return self.args[2] if len(self.args) > 2 else ""

    def __str__(self) -> str:
        reason, fix, backend = self.reason, self.fix, self.backend
        message = reason if not fix or fix in reason else f"{reason}; {fix}"
        return f"backend {backend!r} cannot run here: {message}" if backend else message


def named(err: BackendUnavailableError, name: str) -> BackendUnavailableError:
    """``err`` naming the backend asked for (left as it is while torch.compile traces)."""
    if err.backend or torch.compiler.is_compiling():
        return err
    return BackendUnavailableError(err.reason, err.fix, name)


@dataclass(frozen=True)
class Composer:
    """``cl(w1, b1, w2, b2, w3, b3, groups)``, ``ck(weights, biases)``, ``fc(weights, biases)``
    -> ``(W_eff, b_eff or None)``, differentiable with respect to every argument tensor.

    ``device_types``: where ``auto`` may pick it (``None``: anywhere). ``triton_kernels``: its
    kernels are Triton's (so they also run on a CPU under the interpreter). ``batches_groups``:
    ``cl`` runs all groups in one batched call, so network composition may concatenate equal
    units along the group dimension.
    ``cl_network(units)``: optional, many CL/FC units of *any* shapes at once, ``units`` a sequence
    of ``cl``'s argument tuples (FC as 1x1 taps, one group; all with biases or all without, one
    dtype and device) -> the list of their ``(W_eff, b_eff)``, by a fixed number of launches
    forward and backward (the work-list kernels); network composition uses it once per step.
    ``ck_network(units)``: optional, ``ck``'s ``(weights, biases)`` of many units -> their
    ``(K, b)``, a fixed number of launches per fold level."""

    name: str
    cl: Callable
    ck: Callable
    fc: Callable
    device_types: Optional[Tuple[str, ...]] = None
    cl_network: Optional[Callable] = None
    ck_network: Optional[Callable] = None
    triton_kernels: bool = False
    batches_groups: bool = False


@dataclass(frozen=True)
class Convolver:
    """``conv2d(x, w, b, stride, padding, dilation, groups)`` and ``linear(x, w, b)``, differentiable."""

    name: str
    conv2d: Callable
    linear: Callable
    device_types: Optional[Tuple[str, ...]] = None
    triton_kernels: bool = False


@dataclass(frozen=True)
class ChainRunner:
    """A chain backend: ``chain`` is its chain-fused op (``layer1 -> act -> layer2 [-> act -> 1x1]``
    in one launch); ``convolver`` the same backend's convolution, for the layers one chain launch
    does not cover (CK deeper than two 3x3). It runs where its convolver runs."""

    name: str
    chain: Callable
    convolver: Convolver

    @property
    def conv2d(self) -> Callable:
        return self.convolver.conv2d

    @property
    def device_types(self) -> Optional[Tuple[str, ...]]:
        return self.convolver.device_types

    @property
    def triton_kernels(self) -> bool:
        return self.convolver.triton_kernels


@dataclass(frozen=True)
class FusedPair:
    composer: Composer
    convolver: Convolver

    @property
    def name(self) -> str:
        if self.composer.name == self.convolver.name:
            return self.composer.name
        return f"{self.composer.name}+{self.convolver.name}"


Resolved = Union[str, FusedPair, ChainRunner]  # REFERENCE, a pair or a chain runner


@dataclass(frozen=True)
class BackendInfo:
    """Whether a backend runs on this machine now; if not, ``reason`` says why and ``fix`` how to
    get it. ``devices``: the device types it runs on now; ``note``: how (e.g. interpreted)."""

    name: str
    available: bool
    reason: str = ""
    fix: str = ""
    devices: Tuple[str, ...] = ()
    note: str = ""

    def __str__(self) -> str:
        if self.available:
            return f"{self.name}: available on {', '.join(self.devices)}" + (f" ({self.note})" if self.note else "")
        return f"{self.name}: unavailable ({self.why_not})" + (f"; fix: {self.fix}" if self.fix else "")

    @property
    def why_not(self) -> str:
        """The reason without the fix that loaders often append to it."""
        suffix = f"; {self.fix}"
        return self.reason[:-len(suffix)] if self.fix and self.reason.endswith(suffix) else self.reason
