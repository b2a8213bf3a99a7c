"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors, dicts, lists and plain
values only, never a pickled object, so a checkpoint from elsewhere cannot run code.

- training state (``checkpoint.pt``, rewritten after every epoch): model, optimizer and scheduler
  state_dicts, the epoch just finished, the metrics so far, the CPU RNG state and the run's config;
- model file (``model.pt``): a state_dict and the ``Architecture`` as a dict, enough to rebuild the
  network (how a distillation teacher is loaded).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from expandnets_cuda.train.forms import Architecture, build_model

STATE_FORMAT = "expandnets_cuda.train/state-v1"
MODEL_FORMAT = "expandnets_cuda.train/model-v1"


def _save_atomic(obj: Dict[str, Any], path: str) -> None:
    """Write next to ``path`` and rename over it, so an interrupted save keeps the previous file."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: str, expected_format: str, what: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise ValueError(f"{what} {path!r} cannot be read as a weights-only checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{what} {path!r} is not an expandnets_cuda.train file of format {expected_format!r} "
                         f"(found {found!r})")
    return data


def save_state(path: str, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, history: list,
               identity: Dict[str, Any]) -> None:
    _save_atomic({
        "format": STATE_FORMAT, "epoch": epoch, "identity": identity, "history": history,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
    }, path)


def load_state(path: str) -> Dict[str, Any]:
    """The dict ``save_state`` wrote (tensors on the CPU)."""
    return _load(path, STATE_FORMAT, "checkpoint")


def save_model(path: str, model: nn.Module, arch: Architecture, metrics: Optional[Dict[str, Any]] = None) -> None:
    _save_atomic({"format": MODEL_FORMAT, "architecture": arch.to_dict(), "state_dict": model.state_dict(),
                  "metrics": metrics or {}}, path)


def load_model(path: str, *, backend: str = "auto", device: Optional[torch.device] = None
               ) -> Tuple[nn.Module, Architecture]:
    """Rebuild the network a ``save_model`` file describes and load its weights."""
    data = _load(path, MODEL_FORMAT, "model file")
    try:
        arch = Architecture.from_dict(data["architecture"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"model file {path!r} has no valid architecture: {exc}") from exc
    model = build_model(arch, backend=backend)
    try:
        model.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"model file {path!r}: weights do not fit {arch.describe()}: {exc}") from exc
    return (model.to(device) if device is not None else model), arch
