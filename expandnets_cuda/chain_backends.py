"""The chain backends ``"triton-chain"`` and ``"cuda-chain"``: a whole unit through chain-fused
kernels (``expandnets_cuda.chain_unit``), no composition. The nonlinear counterpart's fast path
(``backend="triton"``/``"cuda"`` on a ``nonlinear=True`` unit means these), and a third path for
linear units, which ``auto`` measures beside the composed pairs on CUDA.

Loaders run lazily, like the composers' and convolvers' in ``backends``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from expandnets_cuda.backends import BackendUnavailableError


@dataclass(frozen=True)
class ChainRunner:
    """``chain`` is the backend's chain op, ``conv2d`` its convolution for the layers one chain
    launch does not cover (CK deeper than two 3x3); ``device_types``: where ``auto`` may pick it."""

    name: str
    chain: Callable
    conv2d: Callable
    device_types: Optional[Tuple[str, ...]] = None


def _triton() -> ChainRunner:
    from expandnets_cuda.triton_backend import load_chain
    return load_chain()


def _cuda() -> ChainRunner:
    from expandnets_cuda.cuda_backend import load_chain
    return load_chain()


CHAIN_BACKENDS: Dict[str, Callable[[], ChainRunner]] = {"triton-chain": _triton, "cuda-chain": _cuda}
# What ``backend="triton"``/``"cuda"`` runs for a nonlinear unit (it has no composed form).
CHAIN_OF = {"triton": "triton-chain", "cuda": "cuda-chain"}
# Every backend name a nonlinear unit accepts.
NONLINEAR_BACKENDS = ("auto", "reference", *CHAIN_OF, *CHAIN_BACKENDS)
# Plain dict, not lru_cache: torch.compile reads it as a guarded constant.
_LOADED: Dict[str, ChainRunner] = {}


def load(name: str) -> ChainRunner:
    if name not in _LOADED:
        _LOADED[name] = CHAIN_BACKENDS[name]()  # an unavailable one raises and is asked again next time
    return _LOADED[name]


def candidates(device: Optional[torch.device] = None) -> List[ChainRunner]:
    """The available chain runners that ``auto`` may run on ``device`` (CUDA only)."""
    device_type = torch.device(device).type if device is not None else None
    runners = []
    for name in CHAIN_BACKENDS:
        try:
            runner = load(name)
        except BackendUnavailableError:
            continue
        if runner.device_types is None or device_type is None or device_type in runner.device_types:
            runners.append(runner)
    return runners


def availability() -> Dict[str, Tuple[bool, str]]:
    """name -> (runs here, why not)."""
    out = {}
    for name in CHAIN_BACKENDS:
        try:
            load(name)
            out[name] = (True, "")
        except BackendUnavailableError as err:
            out[name] = (False, str(err))
    return out
