"""Backend registry: where each composition and convolution implementation plugs in.

A fused unit runs in two stages (docs/design.md section 3): a *composer* turns the expanded parameters
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

import os
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from expandnets_cuda import composition

REFERENCE = "reference"
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


def _named(err: BackendUnavailableError, name: str) -> BackendUnavailableError:
    """``err`` naming the backend asked for (left as it is while torch.compile traces)."""
    if err.backend or torch.compiler.is_compiling():
        return err
    return BackendUnavailableError(err.reason, err.fix, name)


@dataclass(frozen=True)
class Composer:
    """``cl(w1, b1, w2, b2, w3, b3, groups)``, ``ck(weights, biases)``, ``fc(weights, biases)``
    -> ``(W_eff, b_eff or None)``, differentiable with respect to every argument tensor.
    ``device_types``: where ``auto`` may pick it (``None``: anywhere).
    ``cl_many(units)``: optional, many CL/FC units of *any* shapes at once, ``units`` a sequence of
    ``cl``'s argument tuples ``(w1, b1, w2, b2, w3, b3, groups)`` (FC as 1x1 taps, one group; all
    with biases or all without, one dtype and device) -> the list of their ``(W_eff, b_eff)``, by a
    fixed number of launches forward and backward (a work-list kernel); ``network_composition`` uses
    it to compose a whole network per step.
    ``ck_many(units)``: optional, ``ck``'s ``(weights, biases)`` of many units -> their ``(K, b)``, per fold level."""

    name: str
    cl: Callable
    ck: Callable
    fc: Callable
    device_types: Optional[Tuple[str, ...]] = None
    cl_many: Optional[Callable] = None
    ck_many: Optional[Callable] = None


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
        try:
            impl = loaders[name]()  # an unavailable backend raises and is asked again next time
            _require_a_device(impl)
        except BackendUnavailableError as err:
            named = _named(err, name)
            if named is err:
                raise
            raise named from err
        _LOADED[key] = impl
    return _LOADED[key]


# --- where an implementation runs now ----------------------------------------------------------
TRITON_PACKAGE = __name__.rpartition(".")[0] + ".triton_backend"


def _is_triton(impl) -> bool:
    """Implementations named triton(-...) or whose functions live in triton_backend run Triton kernels."""
    return impl.name.split("-")[0] == "triton" or any(
        getattr(f, "__module__", "").startswith(TRITON_PACKAGE) for f in vars(impl).values() if callable(f))


def triton_interpreter_setting() -> bool:
    """Is TRITON_INTERPRET on in this process now (Triton's own reading of it)?"""
    try:
        from triton import knobs
        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


_KERNEL_MODE: Dict[int, str] = {}  # id of the imported triton_backend package -> its kernels' mode


def triton_kernel_mode() -> Optional[str]:
    """How this package's Triton kernels were defined: "interpreted", "compiled", or ``None``
    (not imported yet). Triton reads TRITON_INTERPRET when a kernel is *defined*, i.e. when its
    module is imported, so setting it later changes nothing for kernels already imported.

    Called on every forward (through the device checks), so it must be cheap: nothing to scan
    before the package is imported, and the answer is kept per package object once known."""
    package = sys.modules.get(TRITON_PACKAGE)
    if package is None:
        return None
    if id(package) not in _KERNEL_MODE:
        mode = _scan_kernel_mode()
        if mode is None:
            return None
        _KERNEL_MODE.clear()
        _KERNEL_MODE[id(package)] = mode
    return _KERNEL_MODE[id(package)]


def _scan_kernel_mode() -> Optional[str]:
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(TRITON_PACKAGE + "."):
            continue
        for value in vars(module).values():
            for _ in range(4):  # through @triton.autotune / @triton.heuristics wrappers
                kind = type(value).__name__
                if kind == "InterpretedFunction":
                    return "interpreted"
                if kind == "JITFunction":
                    return "compiled"
                value = getattr(value, "fn", None)
                if value is None:
                    break
    return None


def triton_interpreted() -> bool:
    """Do the Triton kernels run on the CPU (through the interpreter) in this process?"""
    mode = triton_kernel_mode()
    return mode == "interpreted" or (mode is None and triton_interpreter_setting())


def devices_now(impl) -> Tuple[str, ...]:
    """Where ``impl`` can run in this process now."""
    cuda = torch.cuda.is_available()
    if _is_triton(impl) and triton_interpreted():
        return ("cpu",) + (("cuda",) if cuda else ())  # the interpreter runs them on host copies
    types = impl.device_types or ("cpu", "cuda")
    return tuple(t for t in types if t != "cuda" or cuda)


TRITON_NO_DEVICE = (
    "the Triton kernels need a CUDA device, none is visible (torch.cuda.is_available() is False), "
    "and the Triton interpreter is off",
    "run on a machine with a CUDA GPU, or set TRITON_INTERPRET=1 before importing expandnets_cuda "
    "(the interpreter runs them on the CPU, slowly: for tests)")


# Chain runners that passed the device check. A plain dict, as _LOADED: resolve runs in forward.
_CHAINS: Dict[str, object] = {}


def _load_chain(name: str):
    if name not in _CHAINS:
        from expandnets_cuda import chain_backends
        if name == chain_backends.CHAIN_OF.get("triton"):
            _triton_precheck()
        try:
            try:
                runner = chain_backends.load(name)
            except BackendUnavailableError as err:
                if name != chain_backends.CHAIN_OF.get("cuda") or torch.compiler.is_compiling():
                    raise
                raise BackendUnavailableError(str(err), _cuda_fix()) from err
            _require_a_device(runner)
        except BackendUnavailableError as err:
            named = _named(err, name)
            if named is err:
                raise
            raise named from err
        _CHAINS[name] = runner
    return _CHAINS[name]


def _require_a_device(impl) -> None:
    if devices_now(impl):
        return
    if _is_triton(impl):
        if triton_kernel_mode() == "compiled" and triton_interpreter_setting():
            raise BackendUnavailableError(
                "no CUDA device is visible, and TRITON_INTERPRET=1 was set after the Triton kernels were "
                "imported (Triton reads it when a kernel is defined)",
                "set TRITON_INTERPRET=1 before importing expandnets_cuda, in a new process")
        raise BackendUnavailableError(*TRITON_NO_DEVICE)
    raise BackendUnavailableError(
        f"{impl.name} runs only on {', '.join(impl.device_types)} and no such device is visible here",
        f"run on a machine with a {' or '.join(impl.device_types)} device")


def backend_names() -> Tuple[str, ...]:
    names = dict.fromkeys([REFERENCE, *_COMPOSER_LOADERS, *_CONVOLVER_LOADERS])
    return tuple(names)


def check_backend_name(backend) -> str:
    """Validate a backend string's *form* (not availability); return it normalised."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    name = backend.strip().lower()
    from expandnets_cuda.chain_backends import CHAIN_BACKENDS  # lazily: it imports this module
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
    from expandnets_cuda import chain_backends
    if backend in chain_backends.CHAIN_BACKENDS:  # a chain runner (triton-chain, cuda-chain)
        return _load_chain(backend)
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


def _info(name: str, impls) -> BackendInfo:
    """One backend's entry: ``impls`` loads its implementations (both stages, or a pair's two)."""
    try:
        loaded = impls()
    except BackendUnavailableError as err:
        return BackendInfo(name, False, err.reason, err.fix)
    devices = [set(devices_now(impl)) for impl in loaded]
    order = [d for d in devices_now(loaded[0]) if all(d in other for other in devices)]
    interpreted = any(_is_triton(impl) for impl in loaded) and triton_interpreted()
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
    report[REFERENCE] = BackendInfo(REFERENCE, True, devices=devices_now(_torch_convolver()),
                                    note="the unfused chain of python_ref (the semantic definition)")
    for name in backend_names():
        if name == REFERENCE:
            continue
        kinds = [kind for kind, loaders in (("composer", _COMPOSER_LOADERS), ("convolver", _CONVOLVER_LOADERS))
                 if name in loaders]
        info = _info(name, lambda: [_load(kind, name) for kind in kinds])
        if len(kinds) == 1 and info.available:
            info = BackendInfo(name, True, devices=info.devices,
                               note="; ".join(filter(None, [f"{kinds[0]} only: use it in a pair", info.note])))
        report[name] = info
    from expandnets_cuda.chain_backends import CHAIN_BACKENDS
    for name in CHAIN_BACKENDS:
        info = _info(name, lambda: [_load_chain(name)])
        report[name] = BackendInfo(name, info.available, info.reason, info.fix, info.devices, "; ".join(
            filter(None, ["a whole unit in chain-fused kernels", info.note]))) if info.available else info
    for composer in _COMPOSER_LOADERS:
        for convolver in _CONVOLVER_LOADERS:
            pair = f"{composer}+{convolver}"
            if composer != convolver and pair not in report:
                info = _info(pair, lambda: [_load("composer", composer), _load("convolver", convolver)])
                if info.available and info.devices:
                    report[pair] = info
    measured = {device: [p.name for p in candidate_pairs(torch.device(device))]
                for device in ("cpu", "cuda") if device == "cpu" or torch.cuda.is_available()}
    report[AUTO] = BackendInfo(AUTO, True, devices=tuple(measured), note="; ".join(
        f"on {device} picks from {', '.join(names)}" + (" (nothing to measure)" if len(names) == 1 else " (measured)")
        for device, names in measured.items()))
    return report


# --- the built-in torch pair -------------------------------------------------------------------
def _torch_composer() -> Composer:
    return Composer("torch", composition.compose_cl, composition.compose_ck, composition.compose_fc)


def _torch_convolver() -> Convolver:
    return Convolver("torch", F.conv2d, F.linear)


TRITON_MISSING_FIX = ('pip install triton==3.6.0 (the version the tests and the lent GPUs run; '
                      '`pip install "expandnets_cuda[test]"` brings it too); on a machine without a GPU its '
                      'kernels then run under TRITON_INTERPRET=1, for tests')


def _triton_precheck() -> None:
    """Refuse before the kernel modules are imported: without triton, say how to get it; with the
    interpreter off and no GPU, refuse too (importing the kernels then defines them for a GPU for
    the rest of the process)."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        raise BackendUnavailableError(f"triton is not installed ({err})", TRITON_MISSING_FIX) from err
    if not torch.cuda.is_available() and triton_kernel_mode() is None and not triton_interpreter_setting():
        raise BackendUnavailableError(*TRITON_NO_DEVICE)


def _triton_composer() -> Composer:
    _triton_precheck()
    from expandnets_cuda.triton_backend import load_composer
    return load_composer()


def _triton_convolver() -> Convolver:
    _triton_precheck()
    from expandnets_cuda.triton_backend import load_convolver
    return load_convolver()


def _cuda_fix() -> str:
    """How to get the CUDA backend, from the first thing it lacks here."""
    import importlib.util
    from expandnets_cuda.cuda_backend import BUILD_HINT
    if importlib.util.find_spec(__name__.rpartition(".")[0] + "._C") is None:
        return BUILD_HINT
    if torch.version.cuda is None:
        return "install the CUDA build of torch that expandnets_cuda._C was built against"
    if not torch.cuda.is_available():
        return "run on a machine with an NVIDIA GPU of compute capability 8.0 or newer"
    return "run on a GPU of compute capability 8.0 or newer, or rebuild: " + BUILD_HINT


def _cuda_loader(stage: str) -> Callable:
    def load():
        from expandnets_cuda import cuda_backend
        try:
            return getattr(cuda_backend, f"load_{stage}")()
        except BackendUnavailableError as err:
            if torch.compiler.is_compiling():  # the fix is for people, and _cuda_fix does not trace
                raise
            raise BackendUnavailableError(str(err), _cuda_fix()) from err
    return load


_cuda_composer, _cuda_convolver = _cuda_loader("composer"), _cuda_loader("convolver")


register_composer("torch", _torch_composer)
register_convolver("torch", _torch_convolver)
register_composer("triton", _triton_composer)
register_convolver("triton", _triton_convolver)
register_composer("cuda", _cuda_composer)
register_convolver("cuda", _cuda_convolver)
