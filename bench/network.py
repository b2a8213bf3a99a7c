"""Network benchmark: training throughput (images/s of a full SGD step) and memory of a compact
model and its ExpandNets, unfused (the paper's setting) and fused."""
from __future__ import annotations

import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.timing import median_seconds

from .cases import MODELS
from .memory import step_memory

FORMS = ("compact", "cl", "ck", "cl+fc", "ck+fc", "fc")


def build(model_name: str, form: str, rate: float, backend: str) -> nn.Module:
    model = MODELS[model_name]()
    if form == "compact":
        return model
    strategy, _, fc = form.partition("+")
    strategy = None if strategy == "fc" else strategy
    return ec.expand_model(model, strategy, rate, fc=bool(fc) or form == "fc", backend=backend)


def bench_network(model_name: str, form: str, rate: float, fused: bool, batch: int, device: torch.device,
                  min_run_time: float, backend: str = "auto") -> dict:
    torch.manual_seed(0)
    model = build(model_name, form, rate, backend if fused else "reference").to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # fills auto's cache and the optimizer state before timing
    seconds = median_seconds(step, device, min_run_time)
    return {"model": model_name, "form": form, "rate": None if form == "compact" else rate,
            "variant": "compact" if form == "compact" else ("fused" if fused else "unfused"),
            "batch": batch, "step_ms": seconds * 1e3, "images_per_s": batch / seconds,
            "params": ec.count_params(model), **step_memory(lambda: model(x), step, device)}
