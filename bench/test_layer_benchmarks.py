"""pytest-benchmark suite over the layer cases (fwd+bwd of compact, unfused and fused units).

    pytest bench/test_layer_benchmarks.py --benchmark-only                  # measure
    pytest bench/test_layer_benchmarks.py --benchmark-disable               # run each case once
Env: BENCH_DEVICE (default cuda if available), BENCH_BATCH (default 128 on CUDA, 8 on CPU),
BENCH_RATES (default "4"), BENCH_MODELS (default "smallnet7"; add smallnet3, mobilenet_v2).
The CLI (python -m bench.run) is the main benchmark; this suite is for pytest-benchmark's
comparison and regression tooling (--benchmark-compare, --benchmark-autosave).
"""
import os

import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from bench.cases import layer_cases

DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
BATCH = int(os.environ.get("BENCH_BATCH") or (128 if DEVICE.type == "cuda" else 8))
RATES = [float(r) for r in os.environ.get("BENCH_RATES", "4").split(",")]
MODELS = os.environ.get("BENCH_MODELS", "smallnet7").split(",")
CASES = [(case, strategy, rate) for model in MODELS for case in layer_cases(model)
         for strategy in case.strategies(["cl", "ck"]) for rate in RATES]
IMPLS = ["compact", "reference"] + [pair.name for pair in ec.backends.registry.candidate_pairs(DEVICE)]


def _module(case, strategy, rate, impl):
    kwargs = case.conv_kwargs()
    if impl == "compact":
        return nn.Conv2d(**kwargs, device=DEVICE)
    return ec.FusedExpandConv2d(**kwargs, strategy=strategy, rate=rate, backend=impl, device=DEVICE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case,strategy,rate", CASES,
                         ids=[f"{c.model}-{c.name}-{s}-r{r:g}" for c, s, r in CASES])
def test_layer_fwd_bwd(benchmark, case, strategy, rate, impl):
    torch.manual_seed(0)
    module = _module(case, strategy, rate, impl)
    x = torch.randn(BATCH, *case.input_chw, device=DEVICE, requires_grad=True)
    params = list(module.parameters())
    grad = torch.randn_like(module(x))

    def step():
        grads = torch.autograd.grad(module(x), [x, *params], grad)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return grads

    benchmark.extra_info.update({"label": case.label, "batch": BATCH, "device": str(DEVICE)})
    grads = benchmark(step)
    assert all(torch.isfinite(g).all() for g in grads)
