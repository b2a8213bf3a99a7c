"""``backend="auto"``: the fastest available (composer, convolver) pair per layer shape and device,
from measurements taken once and cached on disk as JSON - never from guesses.

Where only one pair can run (a CPU-only machine: the torch pair) nothing is measured. A miss
inside ``torch.compile`` tracing takes the torch pair without measuring (timing cannot run
while tracing); run the model once eagerly to fill the cache first.

Cache: ``$EXPANDNETS_CACHE_DIR/auto_backend.json`` (default ``~/.cache/expandnets_cuda``);
``clear_cache()`` or deleting the file forgets every choice.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import threading
from typing import Dict, List, Tuple

import torch

from . import backends
from .timing import interleaved

_LOCK = threading.Lock()
_MEMORY: Dict[str, str] = {}
_LOADED_FROM: List[pathlib.Path] = []


def cache_path() -> pathlib.Path:
    root = os.environ.get("EXPANDNETS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "expandnets_cuda")
    return pathlib.Path(root) / "auto_backend.json"


def _read_file(path: pathlib.Path) -> Dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a missing or damaged cache is re-measured, never trusted
    return data if isinstance(data, dict) else {}


def _sync_memory() -> None:
    path = cache_path()
    if not _LOADED_FROM or _LOADED_FROM[0] != path:
        _MEMORY.clear()
        _MEMORY.update({k: v["choice"] for k, v in _read_file(path).items()
                        if isinstance(v, dict) and isinstance(v.get("choice"), str)})
        _LOADED_FROM[:] = [path]


def clear_cache() -> None:
    """Forget every measured choice (memory and disk)."""
    with _LOCK:
        _MEMORY.clear()
        _LOADED_FROM.clear()
        cache_path().unlink(missing_ok=True)


def cached_choices() -> Dict[str, dict]:
    """The cache file's entries: key -> {"choice", "times_ms", "date"}."""
    return _read_file(cache_path())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def layer_key(unit, x: torch.Tensor) -> str:
    """What the choice depends on: the unit's spec, the input shape/dtype/layout and the device."""
    layout = "cl" if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else "c"
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    return f"{device_name(x.device)}|{unit.spec}|{tuple(x.shape)}|{dtype}|{layout}"


def _store(key: str, choice: str, times: Dict[str, float]) -> None:
    path = cache_path()
    entries = _read_file(path)
    entries[key] = {"choice": choice, "times_ms": {k: round(v * 1e3, 6) for k, v in times.items()},
                    "date": datetime.datetime.now().isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: concurrent processes never read a half-written file


def measure(unit, x: torch.Tensor, candidates: List[backends.FusedPair]) -> Dict[str, float]:
    """Median fwd+bwd seconds of ``unit`` on ``x`` with each candidate pair, timed round-robin so
    that every candidate sees the same machine. Gradients go to ``torch.autograd.grad`` outputs,
    so nothing accumulates in the parameters' ``.grad``."""
    params = [p for p in unit.parameters() if p.requires_grad]
    probe = x.detach().requires_grad_(x.is_floating_point())
    steps = {}
    for pair in candidates:
        grad_out = torch.randn_like(unit._fused_forward(pair, probe))

        def step(pair=pair, grad_out=grad_out):
            y = unit._fused_forward(pair, probe)
            torch.autograd.grad(y, [probe, *params], grad_out, allow_unused=True)

        steps[pair.name] = step
    timings = interleaved(steps, x.device, min_run_time=0.1, rounds=5)
    return {name: timing.median for name, timing in timings.items()}


# What the last eager call found, per (device type, nonlinear). Probing a backend (imports, the
# environment, Triton's knobs) does not trace, so torch.compile reads this instead (a plain dict:
# Dynamo guards on it as a constant).
_FOUND: Dict[Tuple[str, bool], list] = {}


def _candidates(unit, device: torch.device) -> list:
    """The composed pairs and (on CUDA) the chain runners; a nonlinear unit has only the chains.
    While torch.compile traces, those found eagerly (else the torch pair, or none for a nonlinear
    unit: the unfused chain)."""
    key = (device.type, bool(unit.nonlinear))
    if torch.compiler.is_compiling():
        found = _FOUND.get(key)
        if found is not None:
            return found
        return [] if unit.nonlinear else [backends.resolve("torch", device)]
    from . import chain_backends
    chains = chain_backends.candidates(device)
    _FOUND[key] = chains if unit.nonlinear else backends.candidate_pairs(device) + chains
    return _FOUND[key]


def choose(unit, x: torch.Tensor) -> backends.Resolved:
    candidates = _candidates(unit, x.device)
    if not candidates:  # a nonlinear unit where no chain kernel runs: the unfused chain
        return backends.REFERENCE
    if len(candidates) == 1:
        return candidates[0]
    key = layer_key(unit, x) + ("|nonlinear" if unit.nonlinear else "")
    with _LOCK:
        _sync_memory()
        name = _MEMORY.get(key)
    by_name = {pair.name: pair for pair in candidates}
    if name in by_name:
        return by_name[name]
    if torch.compiler.is_compiling():
        return candidates[0]
    times = measure(unit, x, candidates)
    best = min(times, key=times.get)
    with _LOCK:
        _store(key, best, times)
        _MEMORY[key] = best
    return by_name[best]
