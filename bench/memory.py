"""Memory a training step keeps alive: bytes saved for backward (any device) and, on CUDA, the
peak allocated during one step above what was allocated before it."""
from __future__ import annotations

from typing import Callable, Dict, Iterable

import torch


def saved_for_backward_bytes(forward: Callable[[], torch.Tensor], params: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves during ``forward()`` (the activations an
    unfused chain keeps r-times wider than the compact layer). Storages of ``params`` are left
    out: they are resident whether backward saves a reference to them or not."""
    resident = {p.untyped_storage().data_ptr() for p in params}
    storages: Dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in resident:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def cuda_peak_step_bytes(step: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def step_memory(forward: Callable[[], torch.Tensor], step: Callable[[], object], device: torch.device,
                params: Iterable[torch.Tensor] = ()) -> dict:
    out = {"saved_bytes": saved_for_backward_bytes(forward, params)}
    if torch.device(device).type == "cuda":
        out["cuda_peak_bytes"] = cuda_peak_step_bytes(step, device)
    return out
