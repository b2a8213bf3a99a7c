"""Network benchmark: training throughput (images/s of a full SGD step) and memory of a compact
model, its ExpandNets (unfused, the paper's setting; fused, this library) and the peers a user
could pick instead (bench/peers.py), all of one model timed in one round-robin."""
from __future__ import annotations

import copy
from typing import Dict, List, Sequence

import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.timing import interleaved

from .cases import MODELS
from .launches import count_step_launches
from .memory import step_memory
from .peers import COMPILED_PEERS, build_peer, compile_module

FORMS = ("compact", "cl", "ck", "cl+fc", "ck+fc", "fc")
# The fused model handed to torch.compile: what a user who compiles a peer would compile instead.
FUSED_COMPILE = "fused-compile"
COMPILED_VARIANTS = (*COMPILED_PEERS, FUSED_COMPILE)


def build(model_name: str, form: str, rate: float, backend: str, **model_kwargs) -> nn.Module:
    """``model_kwargs`` go to the model's builder (e.g. ``input_size`` of a SmallNet)."""
    model = MODELS[model_name](**model_kwargs)
    if form == "compact":
        return model
    strategy, _, fc = form.partition("+")
    strategy = None if strategy == "fc" else strategy
    return ec.expand_model(model, strategy, rate, fc=bool(fc) or form == "fc", backend=backend)


def form_strategies(form: str) -> set:
    """The conv strategies a network form uses (``"fc"`` alone uses none)."""
    return {part for part in form.split("+") if part in ("cl", "ck")}


class Variant:
    """One model of the comparison with its own optimizer and data (``batch`` images of
    3 x ``image_size`` x ``image_size``, labels of ``num_classes``): ``step()`` is one SGD step."""

    def __init__(self, model: nn.Module, form: str, rate, variant: str, batch: int, device: torch.device,
                 image_size: int = 32, num_classes: int = 10):
        self.model, self.form, self.rate, self.variant = model.to(device).train(), form, rate, variant
        self.params = ec.count_params(model)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, image_size, image_size, generator=generator).to(device)
        self.y = torch.randint(0, num_classes, (batch,), generator=generator).to(device)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()

    @property
    def name(self) -> str:
        return "compact" if self.form == "compact" else f"{self.form}@{self.rate:g}:{self.variant}"


def network_variants(model_name: str, forms: Sequence[str], rates: Sequence[float], batch: int,
                     device: torch.device, backend: str = "auto", peers: Sequence[str] = (),
                     peer_rates: Dict[str, Sequence[float]] = None,
                     fused_compile_rates: Sequence[float] = ()) -> List[Variant]:
    """Compact, then per form and rate: fused, unfused, the compiled fused model (at
    ``fused_compile_rates``) and each peer (where its rates allow)."""
    peer_rates = peer_rates or {}
    torch.manual_seed(0)
    variants = [Variant(build(model_name, "compact", None, backend), "compact", None, "compact", batch, device)]
    for form in forms:
        if form == "compact":
            continue
        for rate in rates:
            torch.manual_seed(0)
            unfused = build(model_name, form, rate, "reference")
            fused = build(model_name, form, rate, backend)
            fused.load_state_dict(unfused.state_dict())
            variants.append(Variant(fused, form, rate, "fused", batch, device))
            variants.append(Variant(unfused, form, rate, "unfused", batch, device))
            if rate in fused_compile_rates:
                twin = build(model_name, form, rate, backend)
                twin.load_state_dict(unfused.state_dict())
                variants.append(Variant(compile_module(twin), form, rate, FUSED_COMPILE, batch, device))
            for peer in peers:
                if rate in peer_rates.get(peer, rates):
                    variants.append(Variant(build_peer(peer, copy.deepcopy(unfused)), form, rate, peer, batch, device))
    return variants


def bench_networks(model_name: str, forms: Sequence[str], rates: Sequence[float], batch: int,
                   device: torch.device, min_run_time: float, rounds: int = 7, backend: str = "auto",
                   peers: Sequence[str] = (), peer_rates: Dict[str, Sequence[float]] = None,
                   fused_compile_rates: Sequence[float] = ()) -> List[dict]:
    """One row per variant, every variant of the model timed in the same round-robin."""
    variants = network_variants(model_name, forms, rates, batch, device, backend, peers, peer_rates,
                                fused_compile_rates)
    timings = interleaved({v.name: v.step for v in variants}, device, min_run_time=min_run_time, rounds=rounds)
    rows = []
    for v in variants:
        t = timings[v.name]
        rows.append({"model": model_name, "form": v.form, "rate": v.rate, "variant": v.variant, "batch": batch,
                     **t.as_dict("step"), "noisy": t.noisy, "threads": t.threads,
                     "images_per_s": batch / t.median, "params": v.params,
                     **step_memory(lambda v=v: v.model(v.x), v.step, device, v.model.parameters()),
                     **step_launches(v, device)})
    return rows


def step_launches(variant: Variant, device: torch.device) -> dict:
    """Kernels (CUDA) or dispatched operators (CPU) per forward + backward. A compiled model is not
    counted on a CPU: the counting dispatch mode would make Dynamo compile it once more."""
    if variant.variant in COMPILED_VARIANTS and torch.device(device).type != "cuda":
        return {"launches": None}
    counted = count_step_launches(variant.model, variant.x, variant.y, warmup=0)
    return {"launches": counted["launches"], "launches_counted": counted["counted"]}

