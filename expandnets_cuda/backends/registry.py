"""The backend registry: the one place that names backends, and loads them when first asked for.

A ``backend`` string names one implementation for both stages (``"torch"``), a pair
``"<composer>+<convolver>"`` (``"triton+torch"``), a chain backend (``"triton-chain"``),
``"reference"`` (the unfused sub-layers of ``python_ref``) or ``"auto"``.

Implementations register a *loader*: a function that returns the record (``backends.types``) or
raises ``BackendUnavailableError`` saying why not and how to get it. Loaders run lazily, so
importing the package never touches a GPU, a compiler or an optional dependency; the kernel
packages import only ``backends.types`` (and ``triton_mode``), never this module.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from expandnets_cuda.backends import triton_mode
from expandnets_cuda.backends.types import (AUTO, REFERENCE, BackendUnavailableError, ChainRunner, Composer,
                                            Convolver, FusedPair, Resolved, named)

_COMPOSER_LOADERS: Dict[str, Callable[[], Composer]] = {}
_CONVOLVER_LOADERS: Dict[str, Callable[[], Convolver]] = {}
_CHAIN_LOADERS: Dict[str, Callable[[], ChainRunner]] = {}
# What ``backend="triton"``/``"cuda"`` runs for a nonlinear unit (it has no composed form).
_CHAIN_OF: Dict[str, str] = {}
# Loaded implementations by ("composer" | "convolver" | "chain", name). A plain dict rather than
# functools.lru_cache: torch.compile reads a dict as a guarded constant, while it warns about (and
# re-traces) lru_cache wrappers.
_LOADED: Dict[Tuple[str, str], object] = {}


def register_composer(name: str, loader: Callable[[], Composer]) -> None:
    _COMPOSER_LOADERS[name] = loader
    _LOADED.pop(("composer", name), None)


def register_convolver(name: str, loader: Callable[[], Convolver]) -> None:
    _CONVOLVER_LOADERS[name] = loader
    _LOADED.pop(("convolver", name), None)


def register_chain(name: str, loader: Callable[[], ChainRunner], chain_of: Optional[str] = None) -> None:
    """A chain backend; ``chain_of``: the backend whose name means this one for a nonlinear unit."""
    _CHAIN_LOADERS[name] = loader
    _LOADED.pop(("chain", name), None)
    if chain_of is not None:
        _CHAIN_OF[chain_of] = name


def _checked(name: str, load: Callable):
    """``load()`` once it has a device to run on here; its refusal names the backend."""
    try:
        impl = load()  # an unavailable backend raises and is asked again next time
        _require_a_device(impl)
    except BackendUnavailableError as err:
        renamed = named(err, name)
        if renamed is err:
            raise
        raise renamed from err
    return impl


def load(kind: str, name: str):
    """The ``kind`` ("composer" or "convolver") registered as ``name``."""
    key = (kind, name)
    if key not in _LOADED:
        loaders = _COMPOSER_LOADERS if kind == "composer" else _CONVOLVER_LOADERS
        _LOADED[key] = _checked(name, loaders[name])
    return _LOADED[key]


def load_chain(name: str) -> ChainRunner:
    key = ("chain", name)
    if key not in _LOADED:
        _LOADED[key] = _checked(name, _CHAIN_LOADERS[name])
    return _LOADED[key]


# --- where an implementation runs now ----------------------------------------------------------
def devices_now(impl) -> Tuple[str, ...]:
    """Where ``impl`` can run in this process now."""
    cuda = torch.cuda.is_available()
    if impl.triton_kernels and triton_mode.interpreted():
        return ("cpu",) + (("cuda",) if cuda else ())  # the interpreter runs them on host copies
    types = impl.device_types or ("cpu", "cuda")
    return tuple(t for t in types if t != "cuda" or cuda)


def _require_a_device(impl) -> None:
    if devices_now(impl):
        return
    if impl.triton_kernels:
        if triton_mode.kernel_mode() == "compiled" and triton_mode.interpreter_setting():
            raise BackendUnavailableError(
                "no CUDA device is visible, and TRITON_INTERPRET=1 was set after the Triton kernels were "
                "imported (Triton reads it when a kernel is defined)",
                "set TRITON_INTERPRET=1 before importing expandnets_cuda, in a new process")
        raise BackendUnavailableError(*triton_mode.NO_DEVICE)
    raise BackendUnavailableError(
        f"{impl.name} runs only on {', '.join(impl.device_types)} and no such device is visible here",
        f"run on a machine with a {' or '.join(impl.device_types)} device")


def loaders() -> Tuple[Tuple[str, Callable], ...]:
    """Every registered loader as ``(name, loader)``, composers, convolvers and chains: what
    ``backends.auto`` compares to know whether its candidates may have changed."""
    return (*_COMPOSER_LOADERS.items(), *_CONVOLVER_LOADERS.items(), *_CHAIN_LOADERS.items())


# --- names ------------------------------------------------------------------------------------
def backend_names() -> Tuple[str, ...]:
    """The reference and every registered composer and convolver (chain backends: ``chain_names``)."""
    return tuple(dict.fromkeys([REFERENCE, *_COMPOSER_LOADERS, *_CONVOLVER_LOADERS]))


def stage_names(kind: str) -> Tuple[str, ...]:
    return tuple(_COMPOSER_LOADERS if kind == "composer" else _CONVOLVER_LOADERS)


def chain_names() -> Tuple[str, ...]:
    return tuple(_CHAIN_LOADERS)


def chain_of(name: str) -> Optional[str]:
    """The chain backend that ``name`` means for a nonlinear unit, if any."""
    return _CHAIN_OF.get(name)


def nonlinear_names() -> Tuple[str, ...]:
    """Every backend name a nonlinear unit (no composed form) accepts."""
    return (AUTO, REFERENCE, *_CHAIN_OF, *_CHAIN_LOADERS)


def check_backend_name(backend) -> str:
    """Validate a backend string's *form* (not availability); return it normalised."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    name = backend.strip().lower()
    if name in (AUTO, REFERENCE) or name in _CHAIN_LOADERS:
        return name
    parts = name.split("+")
    if len(parts) == 1:
        parts = [name, name]
    if len(parts) != 2 or parts[0] not in _COMPOSER_LOADERS or parts[1] not in _CONVOLVER_LOADERS:
        raise ValueError(
            f"backend must be 'auto', 'reference', one of {sorted(set(_COMPOSER_LOADERS) & set(_CONVOLVER_LOADERS))}"
            f" or '<composer>+<convolver>' with composers {sorted(_COMPOSER_LOADERS)} and convolvers"
            f" {sorted(_CONVOLVER_LOADERS)}, or a chain backend {sorted(_CHAIN_LOADERS)}; got {backend!r}")
    return name


def resolve(backend: str, device: Optional[torch.device] = None) -> Resolved:
    """Turn a validated backend name into what runs; raises ``BackendUnavailableError`` if it can't."""
    if backend == REFERENCE:
        return REFERENCE
    if backend == AUTO:
        return candidate_pairs(device)[0]  # without a layer to measure: the torch pair
    if backend in _CHAIN_LOADERS:
        return load_chain(backend)
    composer_name, _, convolver_name = backend.partition("+")
    return FusedPair(load("composer", composer_name), load("convolver", convolver_name or composer_name))


def _runs_on(impl, device_type: Optional[str]) -> bool:
    return impl.device_types is None or device_type is None or device_type in impl.device_types


def candidate_pairs(device: Optional[torch.device] = None) -> List[FusedPair]:
    """Every available (composer, convolver) pair that ``auto`` may run on ``device``; the torch
    pair first. ``auto`` measures these per layer shape (``backends.auto``)."""
    device_type = torch.device(device).type if device is not None else None
    composers, convolvers = [], []
    for names, kind, out in ((_COMPOSER_LOADERS, "composer", composers), (_CONVOLVER_LOADERS, "convolver", convolvers)):
        for name in names:
            try:
                impl = load(kind, name)
            except BackendUnavailableError:
                continue
            if _runs_on(impl, device_type):
                out.append(impl)
    pairs = [FusedPair(c, v) for c in composers for v in convolvers]
    pairs.sort(key=lambda p: p.name != "torch")
    return pairs


def chain_candidates(device: Optional[torch.device] = None) -> List[ChainRunner]:
    """The available chain runners that ``auto`` may run on ``device``."""
    device_type = torch.device(device).type if device is not None else None
    runners = []
    for name in _CHAIN_LOADERS:
        try:
            runner = load_chain(name)
        except BackendUnavailableError:
            continue
        if _runs_on(runner, device_type):
            runners.append(runner)
    return runners


# --- the built-in backends ---------------------------------------------------------------------
def _torch_composer() -> Composer:
    from expandnets_cuda.compose.ck import compose_ck
    from expandnets_cuda.compose.cl import compose_cl
    from expandnets_cuda.compose.fc import compose_fc
    return Composer("torch", compose_cl, compose_ck, compose_fc, batches_groups=True)


def _torch_convolver() -> Convolver:
    return Convolver("torch", F.conv2d, F.linear)


def _triton(stage: str) -> Callable:
    def load_stage():
        triton_mode.precheck()
        from expandnets_cuda.kernels import triton as kernels
        return getattr(kernels, f"load_{stage}")()
    return load_stage


def _cuda_fix() -> str:
    """How to get the CUDA backend, from the first thing it lacks here."""
    import importlib.util
    from expandnets_cuda.kernels.cuda import BUILD_HINT
    if importlib.util.find_spec("expandnets_cuda._C") is None:
        return BUILD_HINT
    if torch.version.cuda is None:
        return "install the CUDA build of torch that expandnets_cuda._C was built against"
    if not torch.cuda.is_available():
        return "run on a machine with an NVIDIA GPU of compute capability 8.0 or newer"
    return "run on a GPU of compute capability 8.0 or newer, or rebuild: " + BUILD_HINT


def _cuda(stage: str) -> Callable:
    def load_stage():
        from expandnets_cuda.kernels import cuda as kernels
        try:
            return getattr(kernels, f"load_{stage}")()
        except BackendUnavailableError as err:
            if torch.compiler.is_compiling():  # the fix is for people, and _cuda_fix does not trace
                raise
            raise BackendUnavailableError(str(err), _cuda_fix()) from err
    return load_stage


register_composer("torch", _torch_composer)
register_convolver("torch", _torch_convolver)
for _name, _loader in (("triton", _triton), ("cuda", _cuda)):
    register_composer(_name, _loader("composer"))
    register_convolver(_name, _loader("convolver"))
    register_chain(f"{_name}-chain", _loader("chain"), chain_of=_name)
