"""Layer benchmark: fwd, bwd and fwd+bwd time and memory of the compact conv, the unfused chain
and the fused unit on each backend, measured in the same run on the same input."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.timing import median_seconds

from .cases import LayerCase
from .memory import step_memory


def _timings(module: nn.Module, x: torch.Tensor, min_run_time: float) -> Dict[str, float]:
    """Median ms of forward (building the graph, as in training), backward alone, and both."""
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

    out = {f"{name}_ms": median_seconds(fn, x.device, min_run_time) * 1e3
           for name, fn in (("fwd", fwd), ("bwd", bwd), ("fwd_bwd", fwd_bwd))}
    out.update(step_memory(lambda: module(x), fwd_bwd, x.device))
    return out


def bench_layer(case: LayerCase, strategy: str, rate: float, backends: Sequence[str], batch: int,
                device: torch.device, dtype: torch.dtype, min_run_time: float) -> List[dict]:
    """One row per implementation: ``compact``, ``unfused``, then each fused backend."""
    torch.manual_seed(0)
    kwargs = case.conv_kwargs()
    x = torch.randn(batch, *case.input_chw, device=device, dtype=dtype)
    modules = {"compact": nn.Conv2d(**kwargs, device=device, dtype=dtype),
               "unfused": ec.FusedExpandConv2d(**kwargs, strategy=strategy, rate=rate, backend="reference",
                                               device=device, dtype=dtype)}
    for backend in backends:
        fused = ec.FusedExpandConv2d(**kwargs, strategy=strategy, rate=rate, backend=backend,
                                     device=device, dtype=dtype)
        fused.load_state_dict(modules["unfused"].state_dict())
        modules[f"fused[{backend}]"] = fused
    rows = []
    for impl, module in modules.items():
        rows.append({"model": case.model, "layer": case.name, "label": case.label, "strategy": strategy,
                     "rate": rate, "impl": impl, "batch": batch, **_timings(module, x, min_run_time)})
    compact, unfused = rows[0], rows[1]
    for row in rows:
        for mode in ("fwd", "bwd", "fwd_bwd"):
            row[f"{mode}_vs_compact"] = row[f"{mode}_ms"] / compact[f"{mode}_ms"]
            row[f"{mode}_speedup_vs_unfused"] = unfused[f"{mode}_ms"] / row[f"{mode}_ms"]
    return rows
