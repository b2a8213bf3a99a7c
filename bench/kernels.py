"""Kernel benchmark: each backend's convolution against cuDNN (``F.conv2d`` and its backward) and
each composer's composition time, on the paper's layers. The targets it reports against are
the issues': dense conv within 1.3x (Triton) / 1.15x (CUDA) of cuDNN, depthwise at least as fast,
composition under 10 us per SmallNet layer.

    python -m bench.kernels --device cuda                 # every fused backend that runs here
    python -m bench.kernels --device cuda --backends triton --rates 4
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import List

import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.backends import registry as backends  # noqa: E402
from expandnets_cuda.timing import interleaved  # noqa: E402
from expandnets_cuda.reference import ConvUnitSpec, build_conv_layers, layer_params  # noqa: E402

from . import plan as bplan  # noqa: E402
from . import report  # noqa: E402
from .cases import layer_cases  # noqa: E402


def conv_rows(convolver: backends.Convolver, case, batch: int, device, dtype, min_run_time: float) -> List[dict]:
    """fwd, input-grad and weight-grad time of ``convolver`` and of cuDNN/ATen on one layer."""
    torch.manual_seed(0)
    x = torch.randn(batch, *case.input_chw, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(case.out_channels, case.in_channels // case.groups, *case.kernel_size, device=device,
                    dtype=dtype, requires_grad=True)
    b = torch.randn(case.out_channels, device=device, dtype=dtype, requires_grad=True)
    args = (case.stride, case.padding, (1, 1), case.groups)
    steps = {}
    for name, conv in (("aten", F.conv2d), (convolver.name, convolver.conv2d)):
        y = conv(x, w, b, *args)
        grad = torch.randn_like(y)
        steps[name, "fwd"] = lambda conv=conv: conv(x, w, b, *args)
        steps[name, "dgrad"] = lambda y=y, grad=grad: torch.autograd.grad(y, x, grad, retain_graph=True)
        steps[name, "wgrad"] = lambda y=y, grad=grad: torch.autograd.grad(y, [w, b], grad, retain_graph=True)
    timings = interleaved(steps, device, min_run_time=min_run_time)  # aten and the convolver side by side
    rows = []
    for name in ("aten", convolver.name):
        times = {}
        for mode in ("fwd", "dgrad", "wgrad"):
            times.update(timings[name, mode].as_dict(mode))
        rows.append({"kind": "conv", "label": case.label, "impl": name, "batch": batch, "dtype": str(dtype), **times})
    for row in rows[1:]:
        for key in ("fwd_ms", "dgrad_ms", "wgrad_ms"):
            row[key.replace("_ms", "_vs_aten")] = row[key] / rows[0][key]
    return rows


def compose_row(composer: backends.Composer, case, strategy: str, rate: float, device, min_run_time: float) -> dict:
    spec = ConvUnitSpec.create(case.in_channels, case.out_channels, case.kernel_size, case.stride, case.padding,
                               1, case.groups, case.bias, "zeros", strategy, rate)
    weights, biases = layer_params(build_conv_layers(spec, device=device))

    def compose():
        if strategy == "cl":
            b = biases or (None, None, None)
            return composer.cl(weights[0], b[0], weights[1], b[1], weights[2], b[2], spec.groups)
        return composer.ck(weights, biases)

    weight, bias = compose()
    outs = [weight] + ([bias] if bias is not None else [])
    grads = [torch.randn_like(t) for t in outs]
    params = list(weights) + list(biases or [])
    timings = interleaved({"fwd": compose,
                           "fwd_bwd": lambda: torch.autograd.grad([t for t in compose() if t is not None], params,
                                                                  grads)}, device, min_run_time=min_run_time)
    return {"kind": "compose", "label": case.label, "impl": composer.name, "strategy": strategy, "rate": rate,
            **{f"{mode}_us": t.median * 1e6 for mode, t in timings.items()},
            **{f"{mode}_spread": t.spread for mode, t in timings.items()}}


ROUNDS = 7  # interleaved()'s default, which both tables use


def _plan(args, device, wanted, cases) -> bplan.Plan:
    """What ``main`` would time (bench/plan.py); on a CUDA device that is not here, every backend."""
    if device.type == "cuda" and not torch.cuda.is_available():
        names = [n for n in backends.backend_names() if n != backends.REFERENCE]
        composers = convolvers = [n for n in names if not wanted or n in wanted]
    else:
        pairs = backends.candidate_pairs(device)
        composers = list(dict.fromkeys(p.composer.name for p in pairs if not wanted or p.composer.name in wanted))
        convolvers = list(dict.fromkeys(p.convolver.name for p in pairs if not wanted or p.convolver.name in wanted))
    dtypes = [d for d in args.dtypes.split(",") if device.type == "cuda" or d == "float32"]
    out = bplan.Plan(f"bench.kernels on {device.type}; composers {composers}, convolvers {convolvers}")
    conv, compose = out.section("conv"), out.section("compose")
    for case in cases:
        for _ in dtypes:
            for convolver in convolvers:  # aten and the convolver: fwd, dgrad, wgrad each
                conv.add(6, args.min_run_time, ROUNDS, triton_shapes=int(convolver == "triton"))
        for composer in composers:
            for _ in case.strategies(["cl", "ck"]):
                for _ in args.rates.split(","):
                    compose.add(2, args.min_run_time, ROUNDS, triton_shapes=int(composer == "triton"))
    print(out)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backends", default=None, help="default: every composer/convolver that runs on the device")
    p.add_argument("--models", default="smallnet7,mobilenet_v2")
    p.add_argument("--rates", default="2,4,8")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--min-run-time", type=float, default=0.1)
    p.add_argument("--out", default=None)
    p.add_argument("--plan", action="store_true", help="print what would be timed and an estimate, then stop "
                   "(works for --device cuda without a GPU: every backend is assumed built)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    wanted = set(args.backends.split(",")) if args.backends else None
    cases = [c for m in args.models.split(",") for c in layer_cases(m)]
    if args.plan:
        return {"plan": _plan(args, device, wanted, cases).as_dict()}
    pairs = backends.candidate_pairs(device)
    composers = {pair.composer.name: pair.composer for pair in pairs if not wanted or pair.composer.name in wanted}
    convolvers = {pair.convolver.name: pair.convolver for pair in pairs if not wanted or pair.convolver.name in wanted}
    env = report.environment(device, sys.argv[1:] if argv is None else list(argv), "bench.kernels")
    print(f"kernel benchmark on {env['device']}: composers {list(composers)}, convolvers {list(convolvers)}")
    rows: List[dict] = []
    for case in cases:
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            if device.type == "cpu" and dtype != torch.float32:
                continue
            for convolver in convolvers.values():
                rows += conv_rows(convolver, case, args.batch, device, dtype, args.min_run_time)
        for composer in composers.values():
            for strategy in case.strategies(["cl", "ck"]):
                for rate in (float(r) for r in args.rates.split(",")):
                    rows.append(compose_row(composer, case, strategy, rate, device, args.min_run_time))
    for r in rows:
        if r["kind"] == "conv":
            ratios = "".join(f"  {k.split('_vs')[0]} x{r[k]:.2f}" for k in ("fwd_vs_aten", "dgrad_vs_aten", "wgrad_vs_aten") if k in r)
            print(f"conv    {r['label'][:48]:<48} {r['dtype']:<15} {r['impl']:<7} fwd {r['fwd_ms']:.4f} ms "
                  f"dgrad {r['dgrad_ms']:.4f} ms wgrad {r['wgrad_ms']:.4f} ms{ratios}")
        else:
            print(f"compose {r['label'][:48]:<48} {r['strategy']} r={r['rate']:g} {r['impl']:<7} "
                  f"fwd {r['fwd_us']:.1f} us fwd+bwd {r['fwd_bwd_us']:.1f} us")
    out = pathlib.Path(args.out) if args.out else report.REPO / "bench" / "results" / (
        "" if device.type == "cuda" else "local") / f"{report.slug(env['device'])}-{env['date'][:10]}-kernels.json"
    report.write_json(out, {"environment": env, "rows": rows})
    print(f"wrote {out}")
    return {"environment": env, "rows": rows}


if __name__ == "__main__":
    main()
