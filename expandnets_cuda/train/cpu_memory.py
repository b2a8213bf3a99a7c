"""Keep glibc from handing large freed blocks back to the OS (CPU training, benchmarks).

An expanded network's largest gradient (``dW2`` of its widest unit: 26 MB for SmallNet k=7 at
r=8) is freed by ``optimizer.zero_grad()`` (``set_to_none=True``, PyTorch's default) and allocated
again by the next backward. glibc serves blocks that large with ``mmap`` and unmaps them on free.
A loop training one model soon reuses them (glibc raises its mmap threshold after the first free;
0-1 page faults a step measured at r=8), but where steps of different models alternate, as in the
benchmarks' round-robin, the allocation comes back as fresh pages the kernel faults in and zeroes:
about 6,000 faults a call, which made SmallNet k=7's CL+FC composition at r=8 take 1.4-2.0x as
long in the benchmark (docs/benchmarks.md, "Where the added time goes").

``retain_freed_memory()`` sets glibc's ``M_MMAP_THRESHOLD`` (blocks below it come from the heap)
and ``M_TRIM_THRESHOLD`` (the heap is never shrunk), so freed blocks are reused without faults.
The process then keeps its peak heap for its lifetime; that is the price. It changes the whole
process's allocator, so it is opt-in, never done on import. Elsewhere (macOS, Windows, musl) it
changes nothing and says so; an allocator such as jemalloc or tcmalloc (``LD_PRELOAD``) is the
equivalent there.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Dict, Optional

# mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2): mallopt refuses more, and
# larger blocks are always mmapped.
MAX_MMAP_THRESHOLD = 32 << 20
_NEVER_TRIM = 2 ** 31 - 1  # mallopt takes an int
_RETAINING: Optional[int] = None  # the threshold set by this process, if any
# What a command-line flag that asked for it says where it cannot be had.
WITHOUT_GLIBC = "needs glibc (Linux); use jemalloc or tcmalloc (LD_PRELOAD) elsewhere"


def has_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def retain_freed_memory(mmap_threshold: int = MAX_MMAP_THRESHOLD) -> bool:
    """Serve blocks below ``mmap_threshold`` bytes from glibc's heap and never trim it (module doc).

    Returns True where glibc took both settings, False where there is no glibc (nothing changed).
    Raises ``ValueError`` for a threshold outside ``1 .. MAX_MMAP_THRESHOLD``."""
    if isinstance(mmap_threshold, bool) or not isinstance(mmap_threshold, int):
        raise TypeError(f"mmap_threshold must be an int (bytes), got {type(mmap_threshold).__name__}")
    if not 0 < mmap_threshold <= MAX_MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold={mmap_threshold}: must be in 1..{MAX_MMAP_THRESHOLD} bytes "
                         "(glibc's ceiling; larger blocks are always mmapped)")
    if not has_glibc():
        return False
    libc = ctypes.CDLL(None)  # the process's own C library
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_TRIM_THRESHOLD, _NEVER_TRIM)) and bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    global _RETAINING
    if applied:
        _RETAINING = mmap_threshold
    return applied


def allocator_settings() -> Dict[str, object]:
    """What decides how this process's freed memory is reused, for benchmark records: the threshold
    ``retain_freed_memory`` set (None if not called), and the environment's allocator settings."""
    return {"retain_freed_memory": _RETAINING, "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
            "LD_PRELOAD": os.environ.get("LD_PRELOAD")}
