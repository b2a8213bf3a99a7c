"""Backend registry: where each composition and convolution implementation plugs in.

A fused unit runs in two stages (DESIGN.md section 3): a *composer* turns the expanded parameters
into the compact ``(W_eff, b_eff)``, and a *convolver* runs the one compact-size convolution.
The two are chosen separately, so the fastest pair can run (say, Triton composition + cuDNN
convolution). A ``backend`` string names either one implementation for both stages (``"torch"``),
a pair ``"<composer>+<convolver>"`` (``"triton+torch"``), ``"reference"`` (the unfused chain of
``python_ref``: no composition at all) or ``"auto"``.

Implementations register a *loader*: a function that returns the implementation or raises
``BackendUnavailableError`` saying why not and how to get it. Loaders run lazily, so importing the
package never touches a GPU, a compiler or an optional dependency.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from . import composition

REFERENCE = "reference"
AUTO = "auto"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that cannot run here; the message says why and how to get it."""


@dataclass(frozen=True)
class Composer:
    """``cl(w1, b1, w2, b2, w3, b3, groups)``, ``ck(weights, biases)``, ``fc(weights, biases)``
    -> ``(W_eff, b_eff or None)``, differentiable with respect to every argument tensor.
    ``device_types``: where ``auto`` may pick it (``None``: anywhere)."""

    name: str
    cl: Callable
    ck: Callable
    fc: Callable
    device_types: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class Convolver:
    """``conv2d(x, w, b, stride, padding, dilation, groups)`` and ``linear(x, w, b)``, differentiable."""

    name: str
    conv2d: Callable
    linear: Callable
    device_types: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class FusedPair:
    composer: Composer
    convolver: Convolver

    @property
    def name(self) -> str:
        if self.composer.name == self.convolver.name:
            return self.composer.name
        return f"{self.composer.name}+{self.convolver.name}"


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.name}: " + ("available" if self.available else f"unavailable ({self.reason})")


Resolved = Union[str, FusedPair]  # REFERENCE or a pair

_COMPOSER_LOADERS: Dict[str, Callable[[], Composer]] = {}
_CONVOLVER_LOADERS: Dict[str, Callable[[], Convolver]] = {}
# Loaded implementations. A plain dict rather than functools.lru_cache: torch.compile reads a
# dict as a guarded constant, while it warns about (and re-traces) lru_cache wrappers.
_LOADED: Dict[Tuple[str, str], object] = {}


def register_composer(name: str, loader: Callable[[], Composer]) -> None:
    _COMPOSER_LOADERS[name] = loader
    _LOADED.pop(("composer", name), None)


def register_convolver(name: str, loader: Callable[[], Convolver]) -> None:
    _CONVOLVER_LOADERS[name] = loader
    _LOADED.pop(("convolver", name), None)


def _load(kind: str, name: str):
    key = (kind, name)
    if key not in _LOADED:
        loaders = _COMPOSER_LOADERS if kind == "composer" else _CONVOLVER_LOADERS
        _LOADED[key] = loaders[name]()  # an unavailable backend raises and is asked again next time
    return _LOADED[key]


def backend_names() -> Tuple[str, ...]:
    names = dict.fromkeys([REFERENCE, *_COMPOSER_LOADERS, *_CONVOLVER_LOADERS])
    return tuple(names)


def check_backend_name(backend) -> str:
    """Validate a backend string's *form* (not availability); return it normalised."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    name = backend.strip().lower()
    from .chain_backends import CHAIN_BACKENDS  # lazily: it imports this module
    if name in (AUTO, REFERENCE) or name in CHAIN_BACKENDS:
        return name
    parts = name.split("+")
    if len(parts) == 1:
        parts = [name, name]
    if len(parts) != 2 or parts[0] not in _COMPOSER_LOADERS or parts[1] not in _CONVOLVER_LOADERS:
        raise ValueError(
            f"backend must be 'auto', 'reference', one of {sorted(set(_COMPOSER_LOADERS) & set(_CONVOLVER_LOADERS))}"
            f" or '<composer>+<convolver>' with composers {sorted(_COMPOSER_LOADERS)} and convolvers"
            f" {sorted(_CONVOLVER_LOADERS)}, or a chain backend {sorted(CHAIN_BACKENDS)}; got {backend!r}")
    return name


def resolve(backend: str, device: Optional[torch.device] = None) -> Resolved:
    """Turn a validated backend name into what runs; raises ``BackendUnavailableError`` if it can't."""
    if backend == REFERENCE:
        return REFERENCE
    if backend == AUTO:
        return _auto_pair(device)
    from . import chain_backends
    if backend in chain_backends.CHAIN_BACKENDS:  # a chain runner (triton-chain, cuda-chain)
        return chain_backends.load(backend)
    composer_name, _, convolver_name = backend.partition("+")
    return FusedPair(_load("composer", composer_name), _load("convolver", convolver_name or composer_name))


def _auto_pair(device: Optional[torch.device]) -> FusedPair:
    """``auto`` without a layer to measure: the first candidate (the torch pair)."""
    return candidate_pairs(device)[0]


def _runs_on(impl, device_type: Optional[str]) -> bool:
    return impl.device_types is None or device_type is None or device_type in impl.device_types


def candidate_pairs(device: Optional[torch.device] = None) -> List[FusedPair]:
    """Every available (composer, convolver) pair that ``auto`` may run on ``device``; the torch
    pair first. ``auto`` measures these per layer shape (``expandnets_cuda.autotune``)."""
    device_type = torch.device(device).type if device is not None else None
    composers, convolvers = [], []
    for names, kind, out in ((_COMPOSER_LOADERS, "composer", composers), (_CONVOLVER_LOADERS, "convolver", convolvers)):
        for name in names:
            try:
                impl = _load(kind, name)
            except BackendUnavailableError:
                continue
            if _runs_on(impl, device_type):
                out.append(impl)
    pairs = [FusedPair(c, v) for c in composers for v in convolvers]
    pairs.sort(key=lambda p: p.name != "torch")
    return pairs


def available_backends() -> Dict[str, BackendInfo]:
    """Every known backend with whether it can run here and, if not, why and how to get it."""
    infos = {REFERENCE: BackendInfo(REFERENCE, True)}
    for name in backend_names():
        if name == REFERENCE:
            continue
        try:
            if name in _COMPOSER_LOADERS:
                _load("composer", name)
            if name in _CONVOLVER_LOADERS:
                _load("convolver", name)
            infos[name] = BackendInfo(name, True)
        except BackendUnavailableError as err:
            infos[name] = BackendInfo(name, False, str(err))
    # Mixed pairs that can run, e.g. "triton+torch" while the Triton convolution is missing.
    for composer in _COMPOSER_LOADERS:
        for convolver in _CONVOLVER_LOADERS:
            pair = f"{composer}+{convolver}"
            if composer != convolver and pair not in infos:
                try:
                    resolve(pair)
                    infos[pair] = BackendInfo(pair, True)
                except BackendUnavailableError:
                    pass
    return infos


# --- the built-in torch pair -------------------------------------------------------------------
def _torch_composer() -> Composer:
    return Composer("torch", composition.compose_cl, composition.compose_ck, composition.compose_fc)


def _torch_convolver() -> Convolver:
    return Convolver("torch", F.conv2d, F.linear)


def _triton_composer() -> Composer:
    from .triton_backend import load_composer
    return load_composer()


def _triton_convolver() -> Convolver:
    from .triton_backend import load_convolver
    return load_convolver()


def _cuda_composer() -> Composer:
    from .cuda_backend import load_composer
    return load_composer()


def _cuda_convolver() -> Convolver:
    from .cuda_backend import load_convolver
    return load_convolver()


register_composer("torch", _torch_composer)
register_convolver("torch", _torch_convolver)
register_composer("triton", _triton_composer)
register_convolver("triton", _triton_convolver)
register_composer("cuda", _cuda_composer)
register_convolver("cuda", _cuda_convolver)
