"""``backend="auto"``: the fastest available (composer, convolver) pair per layer shape and device,
from measurements taken once and cached on disk as JSON - never from guesses.

Where only one pair can run (a CPU-only machine: the torch pair) nothing is measured. A miss
inside ``torch.compile`` tracing takes the torch pair without measuring (timing cannot run
while tracing); run the model once eagerly to fill the cache first.

Cache: ``$EXPANDNETS_CACHE_DIR/auto_backend.json`` (default ``~/.cache/expandnets_cuda``);
``clear_cache()`` or deleting the file forgets every choice. Processes may share one cache
directory: a write re-reads the file and merges its entry under an exclusive lock
(``auto_backend.json.lock``, ``fcntl.flock`` where the platform has it), then replaces the file
atomically, so concurrent writers neither corrupt it nor drop each other's entries; a miss
re-reads the file before measuring (another process may have measured that shape meanwhile).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import tempfile
import threading
from typing import Dict, List, Tuple

import torch

from expandnets_cuda.backends import registry as backends
from expandnets_cuda.timing import interleaved

_LOCK = threading.Lock()
_MEMORY: Dict[str, str] = {}
_LOADED_FROM: List[pathlib.Path] = []


def cache_path() -> pathlib.Path:
    root = os.environ.get("EXPANDNETS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "expandnets_cuda")
    return pathlib.Path(root) / "auto_backend.json"


def _read_file(path: pathlib.Path) -> Dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # JSONDecodeError, or bytes that are not UTF-8
        return {}  # a missing or damaged cache is re-measured, never trusted
    return data if isinstance(data, dict) else {}


def _choices(entries: Dict[str, dict]) -> Dict[str, str]:
    return {k: v["choice"] for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("choice"), str)}


def _sync_memory(reread: bool = False) -> None:
    """Load the file's choices once per cache path; ``reread``: merge what is on disk now."""
    path = cache_path()
    if not _LOADED_FROM or _LOADED_FROM[0] != path:
        _MEMORY.clear()
        reread = True
    if reread:
        _MEMORY.update(_choices(_read_file(path)))
        _LOADED_FROM[:] = [path]


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    """Exclusive across processes (and this process's threads hold ``_LOCK`` around it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: writes stay atomic, a concurrent one may drop an entry
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def clear_cache() -> None:
    """Forget every measured choice (memory and disk) and the candidates found: the next forward
    asks every backend again (e.g. after building the CUDA extension in this process)."""
    with _LOCK:
        _MEMORY.clear()
        _LOADED_FROM.clear()
        _FOUND.clear()
        _FOUND_WITH.clear()
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


def _store(key: str, choice: str, times: Dict[str, float]) -> Dict[str, dict]:
    """Merge one entry into the file; returns every entry the file holds now."""
    path = cache_path()
    entry = {"choice": choice, "times_ms": {k: round(v * 1e3, 6) for k, v in times.items()},
             "date": datetime.datetime.now().isoformat(timespec="seconds")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path):
        entries = _read_file(path)  # under the lock: what other processes wrote since we last read
        entries[key] = entry
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(entries, indent=1, sort_keys=True))
            os.replace(tmp, path)  # atomic: concurrent processes never read a half-written file
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return entries


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
# Dynamo guards on it as a constant). Eager calls reuse it too while ``_probe_state()`` is what it
# was when found: probing every unavailable backend again (the CUDA one looks for its extension on
# disk) cost ~0.1 ms per unit and forward, about 1% of a CPU training step.
_FOUND: Dict[Tuple[str, bool], list] = {}
_FOUND_WITH: Dict[Tuple[str, bool], tuple] = {}


def _probe_state() -> tuple:
    """What the candidates depend on besides the device: the registered loaders (added, removed or
    replaced) and the functions that list candidates."""
    return (backends.candidate_pairs, backends.chain_candidates, *backends.loaders())


def _candidates(unit, device: torch.device) -> list:
    """The composed pairs and (on CUDA) the chain runners; a nonlinear unit has only the chains.
    While torch.compile traces, those found eagerly (else the torch pair, or none for a nonlinear
    unit: the unfused chain). ``clear_cache()`` asks every backend again."""
    key = (device.type, bool(unit.nonlinear))
    if torch.compiler.is_compiling():
        found = _FOUND.get(key)
        if found is not None:
            return found
        return [] if unit.nonlinear else [backends.resolve("torch", device)]
    state = _probe_state()
    found = _FOUND.get(key)
    if found is not None and _FOUND_WITH.get(key) == state:
        return found
    chains = backends.chain_candidates(device)
    _FOUND[key] = chains if unit.nonlinear else backends.candidate_pairs(device) + chains
    _FOUND_WITH[key] = state
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
    with _LOCK:  # another process sharing the cache may have measured this shape meanwhile
        _sync_memory(reread=True)
        name = _MEMORY.get(key)
    if name in by_name:
        return by_name[name]
    times = measure(unit, x, candidates)
    best = min(times, key=times.get)
    with _LOCK:
        _MEMORY.update(_choices(_store(key, best, times)))
        _MEMORY[key] = best
    return by_name[best]
