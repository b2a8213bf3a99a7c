"""Soak: one process keeps creating, training, evaluating and freeing fused models, and checks that
nothing accumulates and that nothing drifts from a freshly built model.

    python tests/soak.py --steps 3000      # the full soak (1-2 minutes on a 2-core CPU)
    python tests/soak.py --steps 400       # the shortened form tests/test_soak.py runs
    python tests/soak.py --steps 3000 --seed 7 --json summary.json

It runs torch at one intra-op thread (``--threads``: several threads on a shared, oversubscribed
machine spend most of their time waiting for each other) and with oneDNN's primitive cache off
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`` unless set: that cache, keyed by convolution shapes and
bounded at 1024 primitives, grows by tens of MB while the run's ever new shapes fill it, which
would hide this library's own growth).

Each step acts on the current model: an SGD training step (train mode), or a forward in eval mode
(under ``torch.no_grad`` or with autograd on), on a batch of 1-4 samples drawn fresh, sometimes in
channels-last layout; now and then the model is cast to another dtype in place. A model lives a
few steps, then is released and replaced by a new one of another kind and shape:

* units alone: ``FusedExpandConv2d`` with strategy CL (grouped, strided, dilated, padding modes)
  or CK (5x5/7x7), ``FusedExpandLinear`` (FC);
* small networks (conv, BN, ReLU, pooling, linear) through ``expand_model`` (CL or CK, FC on),
  whose ``NetworkComposition`` composes every unit per step;

in float32, float64 or bfloat16, on backend ``torch`` or ``auto``; and a few tiny networks on
backend ``triton`` (under the Triton interpreter on a CPU: a step costs a second or so, so they
get one training step each, spread over the run; every fourth is a CK network).

Checks (any failure is listed and the exit status is 1):

* RSS: after a warm-up (the first quarter, which also imports the Triton interpreter), the largest
  RSS measured at checkpoints (every ``--checkpoint`` steps, after ``gc.collect()`` and
  ``malloc_trim``) in the last quarter exceeds the largest in the first quarter by less than
  ``--rss-growth-mb`` (default 48 MB);
* caches: every in-process cache (``expandnets_cuda.caches.sizes()``) stays within its bound at
  every checkpoint; the shape-keyed caches have their bounds lowered for the run
  (``--cache-bound``), so that the run fills and evicts them;
* no retired model survives: a weak reference to every released model (and to the fresh copies
  the equality checks build) is dead after ``gc.collect()`` at the next checkpoint;
* equality: every ``--check-every`` steps, and for the first two triton networks, a freshly
  constructed model loaded with the live one's ``state_dict`` gives bit-for-bit the same output
  and the same gradients of every parameter (and of the input), in the live model's mode. The
  fresh model first runs one forward under ``torch.no_grad`` (evaluation mode: BN statistics
  untouched), as the live one has: a network composes its units together (``NetworkComposition``)
  from its second forward on, alone on its first, and the two round differently.

The summary (steps, models by kind/backend/dtype, RSS start/peak/end and growth, cache sizes at
the end and their peaks, checks made, seconds) is printed, and written as JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import random
import resource
import sys
import time
import warnings
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")  # see the docstring; read when torch loads

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined

from torch import nn  # noqa: E402

import expandnets_cuda as ec  # noqa: E402
from expandnets_cuda import caches  # noqa: E402

warnings.simplefilter("ignore", ec.ExpansionWarning)  # a CK network's 3x3 conv stays compact, by design

DTYPES = (torch.float32, torch.float64, torch.bfloat16)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# Bounds of the caches that are not keyed by shapes (so have no bound constant of their own):
# registered backend names, one kernel mode, no CUDA-graph capture on a CPU, and no measurement
# where only one pair runs (a CPU: auto takes the torch pair without measuring).
FIXED_BOUNDS = {"backends.registry._LOADED": 18,
                "backends.triton_mode._KERNEL_MODE": 1, "kernels.triton.cl_worklist_ops._CAPTURED_TABLES": 0,
                "compose.ck_network._PINNED_BIAS_PLANS": 0, "kernels.triton.cl_worklist_ops._PINNED_WORK_LISTS": 0,
                "kernels.triton.ck_worklist_ops._PINNED_WORK_LISTS": 0}


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so RSS tracks live memory
    except (OSError, AttributeError):
        pass


def triton_available() -> bool:
    info = ec.available_backends().get("triton")
    return info is not None and info.available and "cpu" in info.devices


# ------------------------------------------------------------------------------------ models
class Spec:
    """How to build one model again (the fresh copy of the equality check)."""

    def __init__(self, kind, backend, dtype, args, input_shape, seed):
        self.kind, self.backend, self.dtype, self.args = kind, backend, dtype, args
        self.input_shape, self.seed = input_shape, seed

    def build(self) -> nn.Module:
        torch.manual_seed(self.seed)
        a = self.args
        if self.kind in ("cl", "ck"):
            model = ec.FusedExpandConv2d(a["cin"], a["cout"], a["k"], stride=a["stride"], padding=a["padding"],
                                         dilation=a["dilation"], groups=a["groups"], bias=a["bias"],
                                         padding_mode=a["padding_mode"], strategy=self.kind, rate=a["rate"],
                                         backend=self.backend)
        elif self.kind == "fc":
            model = ec.FusedExpandLinear(a["cin"], a["cout"], bias=a["bias"], rate=a["rate"], backend=self.backend)
        else:
            model = ec.expand_model(_plain_net(a), a["strategy"], rate=a["rate"], fc=True, backend=self.backend)
        return model.to(self.dtype)

    def describe(self) -> str:
        return f"{self.kind}/{self.backend}/{str(self.dtype).replace('torch.', '')} {self.args}"


def _plain_net(a) -> nn.Module:
    c, k, w = a["cin"], a["k"], a["width"]
    layers = [nn.Conv2d(c, w, k, padding=k // 2), nn.BatchNorm2d(w), nn.ReLU()]
    if a["second"]:
        layers += [nn.Conv2d(w, w, 3, padding=1, groups=a["groups"]), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * w, a["hidden"]), nn.ReLU(),
               nn.Linear(a["hidden"], a["classes"])]
    return nn.Sequential(*layers)


def random_spec(rng: random.Random, seed: int, triton: bool = False) -> Spec:
    if triton:  # tiny: every interpreted kernel costs host time; ``triton`` is "cl" or "ck"
        ck = triton == "ck"
        args = {"cin": rng.randint(1, 3), "k": 5 if ck else 3, "width": rng.randint(2, 4), "second": rng.random() < 0.3,
                "groups": 1, "hidden": rng.randint(2, 5), "classes": rng.randint(2, 4), "strategy": triton,
                "rate": rng.choice((1.5, 2))}
        return Spec("net", "triton", torch.float32, args, (args["cin"], 4, 4), seed)
    kind = rng.choice(("cl", "cl", "ck", "fc", "net", "net"))
    backend = rng.choice(("torch", "auto"))
    dtype = rng.choice(DTYPES)
    rate = rng.choice((1, 1.5, 2, 3))
    if kind == "cl":
        groups = rng.choice((1, 1, 2))
        args = {"cin": groups * rng.randint(1, 4), "cout": groups * rng.randint(1, 4), "k": rng.choice((1, 3, (3, 2))),
                "stride": rng.choice((1, 2)), "padding": rng.choice((0, 1)), "dilation": rng.choice((1, 1, 2)),
                "groups": groups, "bias": rng.random() < 0.7,
                "padding_mode": rng.choice(("zeros", "zeros", "reflect", "replicate", "circular")), "rate": rate}
        size = rng.randint(5, 9)
        return Spec(kind, backend, dtype, args, (args["cin"], size, size + rng.randint(0, 2)), seed)
    if kind == "ck":
        args = {"cin": rng.randint(1, 3), "cout": rng.randint(1, 3), "k": rng.choice((5, 5, 7)),
                "stride": rng.choice((1, 2)), "padding": rng.choice((0, 2, 3)), "dilation": 1, "groups": 1,
                "bias": rng.random() < 0.7, "padding_mode": rng.choice(("zeros", "reflect")), "rate": rate}
        size = rng.randint(7, 10)
        return Spec(kind, backend, dtype, args, (args["cin"], size, size), seed)
    if kind == "fc":
        args = {"cin": rng.randint(1, 24), "cout": rng.randint(1, 16), "bias": rng.random() < 0.7, "rate": rate}
        return Spec(kind, backend, dtype, args, (args["cin"],), seed)
    strategy = rng.choice(("cl", "ck"))
    args = {"cin": rng.randint(1, 3), "k": 5 if strategy == "ck" else rng.choice((3, 5)),
            "width": rng.choice((2, 4)), "second": rng.random() < 0.5, "groups": rng.choice((1, 2)),
            "hidden": rng.randint(3, 8), "classes": rng.randint(2, 5), "strategy": strategy, "rate": rate}
    size = rng.randint(5, 8)
    return Spec(kind, backend, dtype, args, (args["cin"], size, size), seed)


def _input(spec: Spec, batch: int, gen: torch.Generator, dtype: torch.dtype, channels_last: bool):
    x = torch.randn(batch, *spec.input_shape, generator=gen, dtype=torch.float64).to(dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _out_and_grads(model: nn.Module, x: torch.Tensor, seed: int):
    """Output, then gradients of the input and of every parameter, for a fixed random cotangent."""
    x = x.detach().clone().requires_grad_(True)
    y = model(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(y, [x, *params], g, allow_unused=True)
    return [y.detach(), *grads]


def fresh_check(live: nn.Module, spec: Spec, x: torch.Tensor, grad: bool, seed: int, tracker) -> str:
    """'' when a fresh model with the live one's state gives bitwise the same results, else why not."""
    fresh = spec.build().to(next(live.parameters()).dtype)
    tracker(fresh)
    fresh.load_state_dict(live.state_dict())
    fresh.eval()
    with torch.no_grad():
        fresh(x)  # as the live model has run before: from now on a network composes all its units at once
    fresh.train(live.training)
    if grad:
        got, want = _out_and_grads(live, x, seed), _out_and_grads(fresh, x, seed)
        names = ["output", "grad of input"] + [f"grad of {n}" for n, p in live.named_parameters() if p.requires_grad]
    else:
        with torch.no_grad():
            got, want, names = [live(x)], [fresh(x)], ["output (no_grad)"]
    for name, a, b in zip(names, got, want):
        if (a is None) != (b is None) or (a is not None and not torch.equal(a, b)):
            diff = (a.double() - b.double()).abs().max().item() if a is not None and b is not None else "None"
            return f"{spec.describe()} ({'train' if live.training else 'eval'}): {name} differs from a fresh model's (max abs diff {diff})"
    return ""


# ------------------------------------------------------------------------------------ the run
def lower_cache_bounds(bound: int) -> None:
    caches.PLAN_CACHE_SIZE = 4 * bound
    caches.BIAS_PLAN_CACHE_SIZE = bound
    caches.WORK_LIST_CACHE_SIZE = bound


def run(steps: int, seed: int = 0, check_every: int = 25, checkpoint: int = 50, triton_models=None,
        cache_bound: int = 2, rss_growth_mb: float = 48.0, verbose: bool = False, threads: int = 1) -> dict:
    """The soak (see the module doc); returns its summary, whose ``violations`` lists what failed."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ec.ExpansionWarning)
            return _run(steps, seed, check_every, checkpoint, triton_models, cache_bound, rss_growth_mb, verbose)
    finally:
        torch.set_num_threads(before)


def _run(steps, seed, check_every, checkpoint, triton_models, cache_bound, rss_growth_mb, verbose) -> dict:
    started = time.perf_counter()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    lower_cache_bounds(cache_bound)
    use_triton = triton_available() and triton_models != 0
    if use_triton:  # its caches exist from the start, with their bounds lowered too
        from expandnets_cuda.kernels.triton import cl_worklist_ops
        cl_worklist_ops.TABLE_CACHE_SIZE = 2 * cache_bound
    n_triton = (2 + steps // 100 if triton_models is None else triton_models) if use_triton else 0
    # The first in the warm-up (the interpreter's import lands there), the others spread out.
    # Two steps each: a forward under no_grad (which picks each unit's composer), then a training
    # step, which composes the whole network at once (cl_network/ck_network: the work-list caches).
    triton_at = sorted({1 + 2 * ((i * (steps - 3)) // max(2 * n_triton, 1)) for i in range(n_triton)}) if n_triton else []

    violations, models = [], collections.Counter()
    retired = []  # weak references to models released (and fresh copies), checked at checkpoints
    _trim()
    rss_points, start_rss = [], rss_bytes()
    peak_rss = start_rss
    cache_peaks = collections.Counter()
    counts = collections.Counter()
    bounds = {**caches.bounds(), **FIXED_BOUNDS}

    def track(model):
        retired.append((weakref.ref(model), getattr(model, "_soak_label", type(model).__name__)))

    model = spec = opt = None
    remaining = 0
    n_models = 0

    def retire():
        nonlocal model, opt
        if model is not None:
            track(model)
        model = opt = None

    def new_model(triton):
        nonlocal model, spec, opt, remaining, n_models
        retire()
        spec = random_spec(rng, seed * 100003 + n_models, triton)
        model = spec.build()
        model._soak_label = spec.describe()
        opt = _optimizer(model, rng)
        remaining = 2 if triton else rng.randint(5, 25)
        models[f"{spec.kind}/{spec.backend}/{str(spec.dtype).replace('torch.', '')}"] += 1
        n_models += 1

    for step in range(steps):
        if step in triton_at:
            new_model("ck" if triton_at.index(step) % 4 == 3 else "cl")
        elif model is None or remaining <= 0:
            new_model(None)
        remaining -= 1
        triton_step = spec.backend == "triton"
        dtype = next(model.parameters()).dtype
        if spec.backend != "triton" and rng.random() < 0.03:  # cast in place: new addresses, new dtype
            dtype = rng.choice(DTYPES)
            model.to(dtype)
            opt = _optimizer(model, rng)
            counts["casts"] += 1
        batch = rng.randint(1, 2 if triton_step else 4)
        x = _input(spec, batch, gen, dtype, channels_last=rng.random() < 0.3)
        if triton_step:
            action = "eval_no_grad" if remaining else "train"
        else:
            action = rng.choice(("train", "train", "eval_no_grad", "eval_grad"))
        counts[action] += 1
        counts["triton_steps"] += triton_step
        if action == "train":
            model.train()
            loss = model(x).float().square().mean()
            opt.zero_grad(set_to_none=rng.random() < 0.5)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                violations.append(f"step {step}: non-finite loss {loss.item()} ({spec.describe()})")
            del loss
        elif action == "eval_no_grad":
            model.eval()
            with torch.no_grad():
                model(x)
        else:
            model.eval()
            model(x).float().sum().backward()  # autograd on in eval mode: accumulates into .grad
        if ((step % check_every == check_every - 1 and not triton_step)
                or (triton_step and step - 1 in triton_at[:2])):  # the first two triton networks' training step
            if rng.random() < 0.5:
                model.train()
            why = fresh_check(model, spec, x, grad=rng.random() < 0.8, seed=step, tracker=track)
            counts["fresh_checks"] += 1
            if why:
                violations.append(f"step {step}: {why}")
        del x
        peak_rss = max(peak_rss, rss_bytes())
        if step % checkpoint == checkpoint - 1 or step == steps - 1:
            _trim()
            rss_points.append((step, rss_bytes()))
            for name, size in caches.sizes().items():
                cache_peaks[name] = max(cache_peaks[name], size)
                bound = bounds.get(name)
                if bound is not None and size > bound:
                    violations.append(f"step {step}: cache {name} holds {size} entries > its bound {bound}")
            alive = [label for ref, label in retired if ref() is not None]
            if alive:
                violations.append(f"step {step}: {len(alive)} released model(s) still alive, e.g. {alive[0]}")
            retired.clear()
            if verbose:
                print(f"step {step + 1}: rss {rss_points[-1][1] / 2**20:.1f} MB, caches "
                      f"{ {k: v for k, v in caches.sizes().items() if v} }", flush=True)
    retire()
    _trim()
    end_rss = rss_bytes()
    quarter = max(1, steps // 4)
    first = [r for s, r in rss_points if s < quarter] or [rss_points[0][1]]
    last = [r for s, r in rss_points if s >= steps - quarter] or [rss_points[-1][1]]
    growth_mb = (max(last) - max(first)) / 2**20
    if growth_mb >= rss_growth_mb:
        violations.append(f"RSS grew {growth_mb:.1f} MB from the first quarter to the last (bound {rss_growth_mb} MB)")
    alive = [label for ref, label in retired if ref() is not None]
    if alive:
        violations.append(f"end: {len(alive)} released model(s) still alive, e.g. {alive[0]}")
    return {
        "steps": steps, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
        "models_created": n_models, "models": dict(sorted(models.items())), "actions": dict(sorted(counts.items())),
        "rss_mb": {"start": round(start_rss / 2**20, 1),
                   "first_quarter_max": round(max(first) / 2**20, 1), "last_quarter_max": round(max(last) / 2**20, 1),
                   "peak": round(peak_rss / 2**20, 1), "end": round(end_rss / 2**20, 1),
                   "growth": round(growth_mb, 2), "growth_bound": rss_growth_mb},
        "caches_end": {k: v for k, v in caches.sizes().items()},
        "caches_peak": dict(cache_peaks), "cache_bounds": bounds,
        "triton_models": len(triton_at), "violations": violations,
    }


def _optimizer(model: nn.Module, rng: random.Random):
    return torch.optim.SGD(model.parameters(), lr=rng.choice((1e-3, 1e-2)), momentum=rng.choice((0.0, 0.9)),
                           weight_decay=rng.choice((0.0, 1e-4)))


def format_summary(s: dict) -> str:
    r = s["rss_mb"]
    lines = [f"soak: {s['steps']} steps, seed {s['seed']}, {s['seconds']} s, {s['models_created']} models "
             f"({s['triton_models']} on triton)",
             "  models: " + ", ".join(f"{k} {v}" for k, v in s["models"].items()),
             "  actions: " + ", ".join(f"{k} {v}" for k, v in s["actions"].items()),
             f"  RSS MB: start {r['start']}, first-quarter max {r['first_quarter_max']}, last-quarter max "
             f"{r['last_quarter_max']}, peak {r['peak']}, end {r['end']}; growth {r['growth']} (bound {r['growth_bound']})",
             "  caches (end/peak/bound): " + ", ".join(
                 f"{k} {s['caches_end'][k]}/{s['caches_peak'].get(k, 0)}/{s['cache_bounds'].get(k, '-')}"
                 for k in s["caches_end"])]
    lines.append("  OK" if not s["violations"] else "  VIOLATIONS:\n    " + "\n    ".join(s["violations"][:20]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-every", type=int, default=25)
    parser.add_argument("--checkpoint", type=int, default=50)
    parser.add_argument("--triton-models", type=int, default=None, help="default 2 + steps/100 (0: none)")
    parser.add_argument("--cache-bound", type=int, default=2, help="the shape-keyed caches' bound for the run")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rss-growth-mb", type=float, default=48.0)
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    summary = run(args.steps, args.seed, args.check_every, args.checkpoint, args.triton_models,
                  args.cache_bound, args.rss_growth_mb, args.verbose, args.threads)
    print(format_summary(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
