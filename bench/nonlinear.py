"""Nonlinear-counterpart benchmark ("+Init" phase): the unfused nonlinear chain (ReLU between the
sub-layers, every r-times-wider map written, read and saved for backward) against the chain-fused
kernels (``triton-chain``, ``cuda-chain``), per layer case of ``bench.cases``: fwd, bwd and fwd+bwd
time, round-robin on the same input, and the memory a step keeps (saved for backward; on CUDA the
step's peak). The chain path saves the input and the parameters only, whatever the rate.

    bench_nonlinear(models=("smallnet7",), strategies=("cl", "ck"), rates=(2, 4), backends=None,
                    batch=32, device=None, dtype=torch.float32, min_run_time=0.2, rounds=7) -> rows
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

import expandnets_cuda as ec
from expandnets_cuda.backends import registry

from .cases import LayerCase, layer_cases
from .layers import MODES, timed_rows



def chain_backends_on(device: torch.device) -> List[str]:
    """The chain backends that run natively on ``device`` (none on a CPU: the interpreter is for tests)."""
    return [runner.name for runner in registry.chain_candidates(device)] if torch.device(device).type == "cuda" else []


def nonlinear_modules(case: LayerCase, strategy: str, rate: float, backends: Sequence[str], device,
                      dtype) -> Dict[str, nn.Module]:
    """``unfused`` (the reference nonlinear chain) and ``chain[<backend>]`` each, one set of weights."""
    torch.manual_seed(0)
    kwargs = dict(**case.conv_kwargs(), strategy=strategy, rate=rate, nonlinear=True, device=device, dtype=dtype)
    modules = {"unfused": ec.FusedExpandConv2d(**kwargs, backend="reference")}
    for backend in backends:
        chain = ec.FusedExpandConv2d(**kwargs, backend=backend)
        chain.load_state_dict(modules["unfused"].state_dict())
        modules[f"chain[{backend}]"] = chain
    return modules


def bench_nonlinear_layer(case: LayerCase, strategy: str, rate: float, backends: Sequence[str], batch: int,
                          device, dtype: torch.dtype, min_run_time: float, rounds: int = 7) -> List[dict]:
    """One row per implementation of the nonlinear counterpart of ``case``: ``unfused``, then each chain."""
    device = torch.device(device)
    modules = nonlinear_modules(case, strategy, rate, backends, device, dtype)
    x = torch.randn(batch, *case.input_chw, device=device, dtype=dtype)
    base = {"section": "nonlinear", "model": case.model, "layer": case.name, "label": case.label,
            "strategy": strategy, "rate": rate, "batch": batch, "dtype": str(dtype), "device": str(device)}
    rows = timed_rows(modules, x, base, min_run_time, rounds)
    unfused = rows[0]
    for row in rows:
        for mode in MODES:
            row[f"{mode}_speedup_vs_unfused"] = unfused[f"{mode}_ms"] / row[f"{mode}_ms"]
        row["saved_vs_unfused"] = row["saved_bytes"] / max(unfused["saved_bytes"], 1)
    return rows


def bench_nonlinear(models: Sequence[str] = ("smallnet7",), strategies: Sequence[str] = ("cl", "ck"),
                    rates: Sequence[float] = (2, 4), backends: Optional[Sequence[str]] = None, batch: int = 32,
                    device=None, dtype: torch.dtype = torch.float32, min_run_time: float = 0.2,
                    rounds: int = 7) -> List[dict]:
    """Rows of ``bench_nonlinear_layer`` for every layer case of ``models``, strategy and rate.
    ``backends`` defaults to the chain backends that run on ``device`` (default: CUDA if present)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    backends = list(backends) if backends is not None else chain_backends_on(device)
    rows = []
    for model in models:
        for case in layer_cases(model):
            for strategy in case.strategies(strategies):
                for rate in rates:
                    rows += bench_nonlinear_layer(case, strategy, rate, backends, batch, device, dtype,
                                                  min_run_time, rounds)
    return rows
