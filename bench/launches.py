"""Launches per training step: how many kernels (CUDA) or dispatched operators (elsewhere) one
forward + loss + backward of a model issues.

On CUDA the device kernels are counted with ``torch.profiler``. Elsewhere every operator that
reaches a backend kernel is counted by a ``TorchDispatchMode``: views and bare allocations move
no data and launch nothing, so they are left out; a library op (``expandnets::*``, e.g. a Triton
kernel under the interpreter) counts once. The optimizer is left out by default: its launches
depend on its ``foreach`` setting, not on the network's form.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

# Operators that allocate or alias without touching data.
_NO_LAUNCH = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias",
              "lift_fresh", "_to_copy_noop", "set_", "resize_", "_reshape_alias", "unsqueeze", "squeeze"}


def _launches_data(func) -> bool:
    if getattr(func, "is_view", False):
        return False
    return func.overloadpacket.__name__ not in _NO_LAUNCH


class DispatchCounter(TorchDispatchMode):
    """Counts the data-moving operators dispatched while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _launches_data(func):
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def _training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   optimizer: Optional[torch.optim.Optimizer]) -> Callable[[], None]:
    def step():
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if optimizer is not None:
            optimizer.step()
    return step


def count_step_launches(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        optimizer: Optional[torch.optim.Optimizer] = None, warmup: int = 1) -> Dict[str, object]:
    """Launches of one training step (``cross_entropy(model(x), y).backward()``, plus
    ``optimizer.step()`` when given) after ``warmup`` untimed steps (which fill caches, auto's
    choice and the network composer's groups).

    Returns ``{"launches": int, "counted": "cuda_kernels" | "dispatched_ops",
    "library_ops": int (expandnets::* ops among them), "by_op": {name: count}}``."""
    step = _training_step(model, x, y, optimizer)
    for _ in range(warmup):
        step()
    if x.device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize(x.device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize(x.device)
        kernels = Counter(e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
        return {"launches": sum(kernels.values()), "counted": "cuda_kernels",
                "library_ops": None, "by_op": dict(kernels)}
    counter = DispatchCounter()
    with counter:
        step()
    library = sum(n for name, n in counter.ops.items() if name.startswith("expandnets."))
    return {"launches": counter.total, "counted": "dispatched_ops", "library_ops": library,
            "by_op": dict(counter.ops)}
