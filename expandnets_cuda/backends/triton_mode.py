"""Where the Triton kernels run in this process: compiled for a GPU, or on the CPU through the
interpreter (``TRITON_INTERPRET=1``, read by Triton when a kernel is *defined*), and the checks
that refuse before the kernel modules are imported."""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional

import torch

from expandnets_cuda.backends.types import BackendUnavailableError

KERNEL_PACKAGE = "expandnets_cuda.kernels.triton"

MISSING_FIX = ('pip install triton==3.6.0 (the version the tests and the lent GPUs run; '
               '`pip install "expandnets_cuda[test]"` brings it too); on a machine without a GPU its '
               'kernels then run under TRITON_INTERPRET=1, for tests')

NO_DEVICE = (
    "the Triton kernels need a CUDA device, none is visible (torch.cuda.is_available() is False), "
    "and the Triton interpreter is off",
    "run on a machine with a CUDA GPU, or set TRITON_INTERPRET=1 before importing expandnets_cuda "
    "(the interpreter runs them on the CPU, slowly: for tests)")


def interpreter_setting() -> bool:
    """Is TRITON_INTERPRET on in this process now (Triton's own reading of it)?"""
    try:
        from triton import knobs
        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


_KERNEL_MODE: Dict[int, str] = {}  # id of the imported kernel package -> its kernels' mode


def kernel_mode() -> Optional[str]:
    """How this package's Triton kernels were defined: "interpreted", "compiled", or ``None``
    (not imported yet). Setting TRITON_INTERPRET after they are imported changes nothing for them.

    Called on every forward (through the device checks), so it must be cheap: nothing to scan
    before the package is imported, and the answer is kept per package object once known."""
    package = sys.modules.get(KERNEL_PACKAGE)
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
        if module is None or not name.startswith(KERNEL_PACKAGE + "."):
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


def interpreted() -> bool:
    """Do the Triton kernels run on the CPU (through the interpreter) in this process?"""
    mode = kernel_mode()
    return mode == "interpreted" or (mode is None and interpreter_setting())


def require_triton() -> None:
    try:
        import triton  # noqa: F401
    except ImportError as err:
        raise BackendUnavailableError(f"triton is not installed ({err})", MISSING_FIX) from err


def precheck() -> None:
    """Refuse before the kernel modules are imported: without triton, say how to get it; with the
    interpreter off and no GPU, refuse too (importing the kernels then defines them for a GPU for
    the rest of the process)."""
    require_triton()
    if not torch.cuda.is_available() and kernel_mode() is None and not interpreter_setting():
        raise BackendUnavailableError(*NO_DEVICE)


def check_device(t: torch.Tensor) -> None:
    """A Triton kernel's tensors: CUDA, or any device under the interpreter. Reads the variable
    itself, not ``interpreter_setting()``: this runs in forward, and torch.compile cannot trace
    Triton's knobs (a C function)."""
    if t.device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise BackendUnavailableError(
            f"the Triton kernels need CUDA tensors (got {t.device}); on a CPU they run only under the "
            "Triton interpreter: set TRITON_INTERPRET=1 before importing expandnets_cuda (slow, for tests)")
