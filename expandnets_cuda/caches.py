"""The library's in-process caches: what each is keyed by, its bound, and ``sizes()`` to read them.

Caches keyed by layer shapes (one entry per distinct set of shapes) are bounded: a process that
keeps building models of new shapes would otherwise grow them without end. They drop their oldest
entries first (insertion order); a dropped entry is rebuilt on its next use, except the ones a
CUDA-graph capture read, which are pinned (the graph reads their tensors at every replay).

=============================================  ==========================================  ==================
cache                                          key                                         bound
=============================================  ==========================================  ==================
backends.auto._MEMORY (mirror of the JSON file) device|unit spec|input shape|dtype|layout one per measured
                                                                                           shape (CUDA only:
                                                                                           a CPU has one pair)
backends.auto._FOUND (+ _FOUND_WITH: the      (device type, nonlinear)                    4
registry state each entry was found with)
backends.registry._LOADED                      (stage, backend name)                       registered names
backends.triton_mode._KERNEL_MODE              id of the kernels.triton package            1
compose.products._PLANS                        CL unit shape (i, a, c, o, taps)            PLAN_CACHE_SIZE
compose.ck_network._BIAS_PLANS                 CK unit shapes of a network, device         BIAS_PLAN_CACHE_SIZE
kernels.triton.cl_worklist_ops._WORK_LISTS     unit shapes of a network, dtype, device     WORK_LIST_CACHE_SIZE
kernels.triton.ck_worklist_ops._WORK_LISTS     fold shapes of a network, dtype, device     WORK_LIST_CACHE_SIZE
kernels.triton.cl_worklist_ops._TABLES         parameter addresses, device                 TABLE_CACHE_SIZE (LRU)
kernels.triton.cl_worklist_ops._CAPTURED_TABLES parameter addresses, device                one per CUDA-graph
                                                                                           capture (kept as
                                                                                           long as the process)
_PINNED_* (keys of the above a capture read)   as the cache they pin                       one per capture
C++ DeviceTableCache (csrc/binding/)         parameter pointers and shapes               64 / 128
=============================================  ==========================================  ==================

No cache holds parameter values: a unit composes its weight afresh at every forward.
"""
from __future__ import annotations

import sys
from typing import Container, Dict, Hashable

PLAN_CACHE_SIZE = 1024
BIAS_PLAN_CACHE_SIZE = 64
WORK_LIST_CACHE_SIZE = 64


def remember(cache: dict, key: Hashable, value, limit: int, pinned: Container = ()) -> None:
    """``cache[key] = value``, then drop the oldest entries beyond ``limit`` (never ``key`` itself
    nor a ``pinned`` one). Safe against other threads doing the same: nothing iterates the live dict."""
    cache[key] = value
    excess = len(cache) - limit
    if excess <= 0:
        return
    for old in list(cache):  # a snapshot (one C call: atomic under the GIL), oldest first
        if excess <= 0:
            break
        if old == key or old in pinned:
            continue
        if cache.pop(old, None) is not None:
            excess -= 1


def sizes() -> Dict[str, int]:
    """Entries in each in-process cache of the modules imported so far (nothing is imported here)."""
    out: Dict[str, int] = {}
    named = {
        "backends.auto": ("_MEMORY", "_FOUND"),
        "backends.registry": ("_LOADED",),
        "backends.triton_mode": ("_KERNEL_MODE",),
        "compose.products": ("_PLANS",),
        "compose.ck_network": ("_BIAS_PLANS", "_PINNED_BIAS_PLANS"),
        "kernels.triton.cl_worklist_ops": ("_WORK_LISTS", "_PINNED_WORK_LISTS", "_TABLES", "_CAPTURED_TABLES"),
        "kernels.triton.ck_worklist_ops": ("_WORK_LISTS", "_PINNED_WORK_LISTS"),
    }
    package = __name__.rpartition(".")[0]
    for module_name, attributes in named.items():
        module = sys.modules.get(f"{package}.{module_name}")
        for attribute in attributes:
            out[f"{module_name}.{attribute}"] = len(getattr(module, attribute)) if module is not None else 0
    return out


def bounds() -> Dict[str, int]:
    """The bound of each cache ``sizes()`` reports that has one (read now: tests may lower them)."""
    this = sys.modules[__name__]
    out = {"backends.auto._FOUND": 4,
           "compose.products._PLANS": this.PLAN_CACHE_SIZE,
           "compose.ck_network._BIAS_PLANS": this.BIAS_PLAN_CACHE_SIZE,
           "kernels.triton.cl_worklist_ops._WORK_LISTS": this.WORK_LIST_CACHE_SIZE,
           "kernels.triton.ck_worklist_ops._WORK_LISTS": this.WORK_LIST_CACHE_SIZE}
    cl_ops = sys.modules.get(__name__.rpartition(".")[0] + ".kernels.triton.cl_worklist_ops")
    out["kernels.triton.cl_worklist_ops._TABLES"] = cl_ops.TABLE_CACHE_SIZE if cl_ops is not None else 256
    return out
