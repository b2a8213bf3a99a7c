"""Layer benchmark: fwd, bwd and fwd+bwd time and memory of the compact conv, the unfused chain,
the fused unit on each backend and the peers, measured in one round-robin on the same input."""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.timing import interleaved

from .cases import LayerCase
from .memory import step_memory
from .peers import build_peer

MODES = ("fwd", "bwd", "fwd_bwd")


def training_steps(module: nn.Module, x: torch.Tensor) -> Dict[str, Callable[[], object]]:
    """Forward (building the graph, as in training), backward alone, and both."""
    x = x.detach().requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    y = module(x)
    grad = torch.randn_like(y)

    def fwd():
        module(x)

    def bwd():
        torch.autograd.grad(y, [x, *params], grad, retain_graph=True)

    def fwd_bwd():
        torch.autograd.grad(module(x), [x, *params], grad)

    return {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd_bwd}


def timed_rows(modules: Dict[str, nn.Module], x: torch.Tensor, base: dict, min_run_time: float,
               rounds: int) -> List[dict]:
    """One row per module (``base`` + ``impl``): fwd/bwd/fwd+bwd timed in one round-robin, and memory."""
    steps = {(impl, mode): fn for impl, module in modules.items() for mode, fn in training_steps(module, x).items()}
    timings = interleaved(steps, x.device, min_run_time=min_run_time, rounds=rounds)
    rows = []
    for impl, module in modules.items():
        row = {**base, "impl": impl, "threads": torch.get_num_threads()}
        for mode in MODES:
            row.update(timings[impl, mode].as_dict(mode))
        row["noisy"] = any(timings[impl, mode].noisy for mode in MODES)
        row.update(step_memory(lambda module=module: module(x), steps[impl, "fwd_bwd"], x.device,
                               module.parameters()))
        rows.append(row)
    return rows


def layer_modules(case: LayerCase, strategy: str, rate: float, backends: Sequence[str], device, dtype,
                  peers: Sequence[str] = ()) -> Dict[str, nn.Module]:
    """``compact``, ``unfused``, ``fused[<backend>]`` for each backend, then each peer; one set of weights."""
    torch.manual_seed(0)
    kwargs = case.conv_kwargs()
    modules = {"compact": nn.Conv2d(**kwargs, device=device, dtype=dtype),
               "unfused": ec.FusedExpandConv2d(**kwargs, strategy=strategy, rate=rate, backend="reference",
                                               device=device, dtype=dtype)}
    for backend in backends:
        fused = ec.FusedExpandConv2d(**kwargs, strategy=strategy, rate=rate, backend=backend,
                                     device=device, dtype=dtype)
        fused.load_state_dict(modules["unfused"].state_dict())
        modules[f"fused[{backend}]"] = fused
    for peer in peers:
        modules[peer] = build_peer(peer, nn.Sequential(copy.deepcopy(modules["unfused"])))
    return modules


def bench_layer(case: LayerCase, strategy: str, rate: float, backends: Sequence[str], batch: int,
                device: torch.device, dtype: torch.dtype, min_run_time: float, peers: Sequence[str] = (),
                rounds: int = 7) -> List[dict]:
    """One row per implementation: ``compact``, ``unfused``, each fused backend, each peer."""
    modules = layer_modules(case, strategy, rate, backends, device, dtype, peers)
    x = torch.randn(batch, *case.input_chw, device=device, dtype=dtype)
    base = {"model": case.model, "layer": case.name, "label": case.label, "strategy": strategy, "rate": rate,
            "batch": batch}
    rows = timed_rows(modules, x, base, min_run_time, rounds)
    compact, unfused = rows[0], rows[1]
    for row in rows:
        for mode in MODES:
            row[f"{mode}_vs_compact"] = row[f"{mode}_ms"] / compact[f"{mode}_ms"]
            row[f"{mode}_speedup_vs_unfused"] = unfused[f"{mode}_ms"] / row[f"{mode}_ms"]
    return rows
