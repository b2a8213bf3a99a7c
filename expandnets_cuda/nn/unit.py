"""What the fused conv and linear modules share: backend choice, input checks, composition precision."""
from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import Optional, Tuple

import torch
from torch import nn

from expandnets_cuda.reference import layer_params
from expandnets_cuda.backends import auto as autotune
from expandnets_cuda.backends import registry as backends

Tensor = torch.Tensor


# unit.__dict__ keys shared with ``nn.network``: the (composer name, (W_eff, b_eff))
# a NetworkComposition staged for this forward, per thread, and the composer the unit last ran with.
STAGED = "_staged_composed"
LAST_COMPOSER = "_last_composer"
# Staged compositions are per thread: units composed together share one autograd node, so a
# forward in one thread must never take what another thread's forward staged (the first of the
# two backward passes would free the node the other still needs).
_STAGING = threading.Lock()


def stage(unit: nn.Module, composer_name: str, composed) -> None:
    with _STAGING:
        unit.__dict__.setdefault(STAGED, {})[threading.get_ident()] = (composer_name, composed)


def unstage(unit: nn.Module):
    """Take (and drop) what this thread staged on ``unit``: ``(composer name, composed)`` or None."""
    with _STAGING:
        staged = unit.__dict__.get(STAGED)
        if staged is None:
            return None
        found = staged.pop(threading.get_ident(), None)
        if not staged:
            del unit.__dict__[STAGED]
        return found


def compose_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """Compose in float32 at least (float64 stays float64), whatever the parameters are stored in."""
    return torch.float64 if param_dtype == torch.float64 else torch.float32


def functorch_transforms_active() -> bool:
    """Inside ``torch.func.grad``, ``vmap``, ``jacrev``, ...: the composers' autograd Functions
    have no functorch rules (``setup_context``, a vmap rule), so a unit runs as the unfused chain
    there (``FusedUnit._resolve``): the same function and gradients, at the chain's cost."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active is not None and active())


def autocast_off(device_type: str):
    """A context with autocast off on ``device_type`` (the composition is a chain of GEMMs whose
    rounding would compound); a no-op on the meta device, where ``torch.autocast`` raises."""
    return torch.autocast(device_type=device_type, enabled=False) if device_type != "meta" else nullcontext()


def autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled``, False on the meta device (shape inference), which has no
    autocast: torch raises there instead of answering."""
    return device_type != "meta" and torch.is_autocast_enabled(device_type)


class FusedUnit(nn.Module):
    """Base of ``FusedExpandConv2d`` / ``FusedExpandLinear``: owns ``layers`` (the expanded
    sub-layers, exactly as ``python_ref`` builds them) and runs them through a backend."""

    layers: nn.ModuleList
    nonlinear: bool

    def _init_backend(self, backend) -> None:
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        name = backends.check_backend_name(value)
        if self.nonlinear and name not in backends.nonlinear_names():
            raise ValueError(f"backend={value!r}: a nonlinear counterpart (ReLU between sub-layers) has no "
                             "composed form; it runs as the unfused chain ('reference'), through the chain-fused "
                             "kernels ('triton', 'cuda', 'triton-chain', 'cuda-chain') or 'auto'")
        if name not in (backends.AUTO, backends.REFERENCE):
            backends.resolve(self._runnable(name))  # fail now, with the reason, if it cannot run at all
        self._backend = name

    def _runnable(self, name: str) -> str:
        """A nonlinear unit's ``"triton"``/``"cuda"`` is that backend's chain runner."""
        return (backends.chain_of(name) or name) if self.nonlinear else name

    def _resolve(self, x: Tensor) -> backends.Resolved:
        if functorch_transforms_active():
            return backends.REFERENCE
        if self._backend == backends.AUTO:
            return autotune.choose(self, x)
        return backends.resolve(self._runnable(self._backend), x.device)

    def _fused_forward(self, pair: backends.FusedPair, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_tensor(self, x, feature_dim: int, expected: int, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        if x.shape[feature_dim] != expected:
            raise ValueError(f"input has {x.shape[feature_dim]} {what} at dim {feature_dim}, "
                             f"expected {expected}; input shape {tuple(x.shape)}")
        weight = self.layers[0].weight
        if x.device != weight.device:
            raise ValueError(f"input is on {x.device} but the module's parameters are on {weight.device}")
        if x.dtype != weight.dtype and not autocast_enabled(x.device.type):
            raise TypeError(f"input dtype {x.dtype} does not match the parameters' dtype {weight.dtype}; "
                            "convert the module with .to(dtype) or run under torch.autocast")

    def _params(self, dtype: torch.dtype):
        weights, biases = layer_params(self.layers)
        weights = [w.to(dtype) for w in weights]
        biases = [b.to(dtype) for b in biases] if biases is not None else None
        return weights, biases

    def _composed(self, composer: backends.Composer, device_type: str) -> Tuple[Tensor, Optional[Tensor]]:
        # Composed afresh at every forward, evaluation included: nn.Conv2d sees every change of its
        # weight, and so must this. A cache keyed by the parameters' versions would miss writes
        # through ``p.data`` (weight EMA, pruning masks, ``weight.data.clamp_()``), which bump no
        # version; a deployed network is contracted once instead (``contract_model``).
        if not torch.compiler.is_compiling():
            staged = unstage(self)  # composed with the whole network this forward
            self.__dict__[LAST_COMPOSER] = composer
            if staged is not None and staged[0] == composer.name and torch.is_grad_enabled():
                return staged[1]
        with autocast_off(device_type):
            weights, biases = self._params(compose_dtype(self.layers[0].weight.dtype))
            return self._compose_with(composer, weights, biases)

    def _compose_with(self, composer, weights, biases):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def _to_compute_dtype(x: Tensor, weight: Tensor, bias: Optional[Tensor]):
        """Under autocast the convolution casts for itself; otherwise match the input's dtype."""
        if autocast_enabled(x.device.type):
            return weight, bias
        return weight.to(x.dtype), (bias.to(x.dtype) if bias is not None else None)

    def composed_weight(self, backend: Optional[str] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """The compact ``(weight, bias)`` this unit computes, differentiable, in float32 (float64 for
        float64 parameters). ``backend`` picks the composer (default: this module's)."""
        if self.nonlinear:
            raise ValueError("a nonlinear counterpart (ReLU between sub-layers) has no composed weight")
        device = self.layers[0].weight.device
        resolved = backends.resolve(backends.check_backend_name(backend or self._backend), device)
        if resolved == backends.REFERENCE or isinstance(resolved, backends.ChainRunner):
            resolved = backends.resolve("torch", device)  # these compose nothing themselves
        return self._composed(resolved.composer, device.type)

    @torch.no_grad()
    def _contracted_params(self):
        """Exact compact parameters: composed in float64, then stored in the parameters' dtype."""
        if self.nonlinear:
            raise ValueError("a nonlinear counterpart (ReLU between sub-layers) cannot be contracted")
        weights, biases = self._params(torch.float64)
        return self._compose_with(backends.resolve("torch").composer, weights, biases)
