"""Fuzzing: at least ``scaled(500)`` invalid or hostile constructor arguments and inputs per run.

Every case is drawn from ``case_rng(NAME, index)`` alone and ends in one of the allowed outcomes:

* a ``ValueError``/``TypeError`` whose message names the argument at fault (a constructor
  argument, or ``input`` at call time), or ``BackendUnavailableError`` naming an unavailable backend;
* or what the compact layer does: ``nn.Conv2d``/``nn.Linear`` built from the same arguments
  (holding the contracted weights, ``python_ref``'s contraction) raises an exception of the same
  family, or gives the same output - shape, dtype, device, the same non-finite (NaN/inf) positions
  and the finite values within tolerance - and the unit's gradients match ``python_ref``'s unfused
  chain (zero-size batches: zero-size outputs and all-zero parameter gradients, as torch gives).

After a refused call the unit is unchanged (state_dict, gradients, requires_grad flags, backend,
mode) and a following valid call still matches the reference. Backends: ``torch``, ``reference``
and ``auto`` (which resolves to the torch pair on a CPU). A failure prints ``replay(...)`` with the
case's spec; ``EXPANDNETS_TEST_CASE=<index>`` runs one case alone.
"""
import copy
import math
import os
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import expandnets_cuda as ec
import helpers
import python_ref as pr
from helpers import REL_TOL, RUN_SEED, case_rng, rel_error, scaled

# torch's own remarks on the compact layers built from hostile arguments, not the library's.
pytestmark = [pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")]

NAME = "fuzz"
CHUNKS = 8
TOTAL = scaled(1000, minimum=CHUNKS)
BACKENDS = ["torch", "reference", "auto"]
COMPARED = {}  # chunk -> cases checked

CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
             "padding_mode", "strategy", "rate", "backend", "nonlinear", "dtype", "device")
LINEAR_ARGS = ("in_features", "out_features", "bias", "rate", "backend", "nonlinear", "dtype", "device")
NN_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
                "padding_mode", "dtype", "device")
NN_LINEAR_ARGS = ("in_features", "out_features", "bias", "dtype", "device")
# Words an error about an argument may name it by (an argument invalid only jointly with another
# may be reported under the other's name).
ALIASES = {"strategy": ("strategy", "kernel_size"), "nonlinear": ("nonlinear", "backend"),
           "stride": ("stride", "padding"), "in_channels": ("in_channels", "groups"),
           "out_channels": ("out_channels", "groups"), "groups": ("groups", "in_channels", "out_channels")}


@pytest.fixture(autouse=True)
def _one_thread():
    with helpers.torch_threads(1):
        yield


class CaseFailure(AssertionError):
    pass


def fail(message):
    raise CaseFailure(message)


# --- outcomes and their comparison -----------------------------------------------------------------
class Raised:
    def __init__(self, exc):
        self.exc = exc

    def __repr__(self):
        return f"{type(self.exc).__name__}: {str(self.exc)[:300]}"


def outcome(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every exception is an outcome to judge
        return Raised(exc)


def family(exc) -> type:
    """The built-in class right below Exception: NotImplementedError and torch's errors are
    RuntimeErrors, OverflowError an ArithmeticError, KeyError a LookupError."""
    for cls in type(exc).__mro__:
        if Exception in cls.__bases__ or cls is Exception:
            return cls
    return type(exc)


def names(exc, args) -> bool:
    text = str(exc)
    return any(word in text for arg in args for word in ALIASES.get(arg, (arg,)))


def nonfinite_close(actual, expected, tol, what, subset=False):
    """Same shape; same non-finite positions (NaN and inf alike: an unfused chain may turn an inf
    into a NaN); the finite values within ``tol`` of ``expected``'s norm. ``subset``: ``actual`` may
    be finite where ``expected`` is not (a parameter gradient of the unfused chain multiplies a zero
    gradient by an inf activation the output never reads: NaN, where the composed one stays finite)."""
    if tuple(actual.shape) != tuple(expected.shape):
        fail(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    a, e = actual.detach().double(), expected.detach().double()
    bad_a, bad_e = ~torch.isfinite(a), ~torch.isfinite(e)
    if subset and not (bad_a & ~bad_e).any():
        pass  # non-finite only where the reference is
    elif not torch.equal(bad_a, bad_e):
        fail(f"{what}: non-finite at {int(bad_a.sum())} positions, reference at {int(bad_e.sum())} "
             f"(differ at {int((bad_a ^ bad_e).sum())})")
    a, e = a[~bad_e], e[~bad_e]
    if e.numel() == 0:
        return
    scale = e.norm().item()
    err = (a - e).norm().item()
    if scale == 0.0:
        if err > 1e-300:
            fail(f"{what}: reference is all zeros, got norm {err:.3e}")
        return
    if not err <= tol * scale:
        fail(f"{what}: relative error {err / scale:.3e} > {tol:.1e}")


def tolerance(dtype):
    return 4 * REL_TOL[dtype]


def snapshot(unit):
    return dict(state={k: v.detach().clone() for k, v in unit.state_dict().items()},
                grads={n: None if p.grad is None else p.grad.clone() for n, p in unit.named_parameters()},
                flags={n: p.requires_grad for n, p in unit.named_parameters()},
                backend=unit.backend, training=unit.training,
                dtypes={n: (p.dtype, p.device) for n, p in unit.named_parameters()})


def assert_unchanged(unit, snap, what):
    now = snapshot(unit)
    for key in ("flags", "backend", "training", "dtypes"):
        if now[key] != snap[key]:
            fail(f"{what}: the refused call changed the unit's {key}: {snap[key]} -> {now[key]}")
    if now["state"].keys() != snap["state"].keys():
        fail(f"{what}: state_dict keys changed")
    for k, v in snap["state"].items():
        if not torch.equal(now["state"][k], v):
            fail(f"{what}: the refused call changed {k}")
    for k, v in snap["grads"].items():
        g = now["grads"][k]
        if (v is None) != (g is None) or (v is not None and not torch.equal(v, g)):
            fail(f"{what}: the refused call changed the gradient of {k}")


def grads_of(y, x, module, grad_out):
    """Gradients of ``y`` for ``x`` (if it requires grad) and each parameter that does, by name;
    unused ones as zeros (torch's own convolution gives zeros for an empty batch)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    inputs = ([("input", x)] if x.requires_grad else []) + named
    if not inputs or not y.requires_grad:
        return {}
    got = torch.autograd.grad(y, [t for _, t in inputs], grad_out.to(y.dtype), allow_unused=True)
    return {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(inputs, got)}


def condition_numbers(ref, x, grad_out, expected) -> dict:
    """||the chain run on magnitudes|| / ||the chain|| for the output and each gradient (>= 1; large
    where the sum cancels). Only for a linear chain on finite input; 1.0 otherwise."""
    if getattr(ref, "nonlinear", False) or not bool(torch.isfinite(x.detach()).all()):
        return {}
    absolute = copy.deepcopy(ref)
    with torch.no_grad():
        for p in absolute.parameters():
            p.abs_()
    x_abs = x.detach().abs().requires_grad_(x.requires_grad)
    y_abs = absolute(x_abs)
    sums = {"output": y_abs, **grads_of(y_abs, x_abs, absolute, grad_out.abs())}
    out = {}
    for k, e in expected.items():
        if k in sums:
            e_norm, m_norm = e.detach().double().norm().item(), sums[k].detach().double().norm().item()
            if e_norm > 0 and math.isfinite(m_norm):
                out[k] = max(1.0, m_norm / e_norm)
    return out


def compare_call(unit, ref, compact, x, what, dtype):
    """``unit(x)`` against the float64 chain ``ref`` and compact layer ``compact`` (``None`` for a
    nonlinear unit), values and gradients. ``x`` is a leaf; each module gets its own copy.

    Below float64 a gradient may cancel to a few ulps, where any rounding is a large relative error
    (float32 too: a weight gradient summed over a few pixels of mixed sign): the unit may then miss
    the float64 values by up to 4x what the unfused chain run in the same dtype misses them by."""
    low = dtype != torch.float64
    xs = [x.detach().to(m_dtype).requires_grad_(x.requires_grad) for m_dtype in (dtype, torch.float64, dtype)]
    y = unit(xs[0])
    y_ref = ref(xs[1])
    if y.dtype != dtype or y.device != x.device:
        fail(f"{what}: output {y.dtype} on {y.device}, expected {dtype} on {x.device}")
    if y.requires_grad != y_ref.requires_grad:
        fail(f"{what}: output requires_grad {y.requires_grad}, reference {y_ref.requires_grad}")
    grad_out = torch.randn(y_ref.shape, dtype=torch.float64)
    got = {"output": y, **grads_of(y, xs[0], unit, grad_out)}
    expected = {"output": y_ref, **grads_of(y_ref, xs[1], ref, grad_out)}
    if got.keys() != expected.keys():
        fail(f"{what}: gradients for {sorted(got)}, reference {sorted(expected)}")
    tols = dict.fromkeys(expected, tolerance(dtype))
    if low:  # the chain in the unit's dtype: how far rounding alone lands from float64
        chain = copy.deepcopy(ref).to(dtype)
        y_low = chain(xs[2])
        same = {"output": y_low, **grads_of(y_low, xs[2], chain, grad_out)}
        # (parameter gradients are sums over the batch and image: at least 10x the dtype's tolerance)
        # and the condition of each sum: the same chain on magnitudes (|x|, |weights|, |grad|) gives
        # the sums of |terms|; rounding errors scale with those, not with the cancelled result
        magnitude = condition_numbers(ref, xs[1], grad_out, expected)
        tols = {k: max(t if k in ("output", "input") else 10 * REL_TOL[dtype], 4 * rel_error(same[k], expected[k]),
                       4 * REL_TOL[dtype] * magnitude.get(k, 1.0))
                for k, t in tols.items()}
    hostile = not bool(torch.isfinite(xs[1].detach()).all())
    for name in expected:
        nonfinite_close(got[name], expected[name], tols[name],
                        f"{what} {name if name == 'output' else 'grad of ' + name} vs python_ref chain",
                        subset=hostile and name not in ("input", "output"))
    if compact is not None:
        with torch.no_grad():
            nonfinite_close(y, compact(xs[1].detach()), tols["output"], f"{what} output vs compact layer")
    return y


def check_refusal(got, expected_compact, args, what):
    """``got`` raised: allowed if a ValueError/TypeError naming one of ``args``, or the same
    family as the compact layer's exception."""
    if not isinstance(got, Raised):
        fail(f"{what}: accepted (a {type(got).__name__}), expected a refusal naming {list(args)}")
    exc = got.exc
    if isinstance(exc, (ValueError, TypeError)) and names(exc, args):
        return
    if isinstance(exc, ec.BackendUnavailableError) and "backend" in args and "backend" in str(exc):
        return
    if isinstance(expected_compact, Raised) and family(exc) is family(expected_compact.exc):
        return
    fail(f"{what}: raised {got!r}; allowed: ValueError/TypeError naming {list(args)}, or what the "
         f"compact layer does ({expected_compact!r})")


# --- valid bases -----------------------------------------------------------------------------------
def base_conv(rng) -> dict:
    if rng.random() < 0.2:
        kw = dict(in_channels=rng.randint(1, 2), out_channels=rng.randint(1, 2), kernel_size=5, strategy="ck",
                  groups=1)
    else:
        groups = rng.choice([1, 1, 2])
        kw = dict(in_channels=groups * rng.randint(1, 2), out_channels=groups * rng.randint(1, 2),
                  kernel_size=rng.choice([1, 2, 3, (2, 3)]), strategy="cl", groups=groups)
    kw.update(stride=rng.choice([1, 1, 2, (1, 2)]), dilation=rng.choice([1, 1, 2]), bias=rng.random() < 0.6,
              padding=rng.choice([0, 1, 2, (1, 0)]), padding_mode=rng.choice(pr.spec.PADDING_MODES),
              rate=rng.choice([1, 1.5, 2, 4]), backend=rng.choice(BACKENDS), nonlinear=False,
              dtype=torch.float64)
    return kw


def base_linear(rng) -> dict:
    return dict(in_features=rng.randint(1, 4), out_features=rng.randint(1, 4), bias=rng.random() < 0.6,
                rate=rng.choice([1, 1.5, 2, 4]), backend=rng.choice(BACKENDS), nonlinear=False, dtype=torch.float64)


# --- hostile constructor values (some valid spellings among them: they must then work) ------------------
INTS_BAD = [0, -1, -(2**63), 2.0, 1.5, "4", None, True, False, [2], (2,), 1j, float("nan"), float("inf"),
            torch.tensor(2), np.float64(2.0), Decimal(2), b"2", 10**30]
PAIRS_BAD = [0, -1, (0, 1), (1, -1), 1.0, (1, 1.5), "1", None, True, (1,), (1, 1, 1), [1, True], np.array([1, 1]),
             torch.tensor([1, 1]), {1: 1}, (None, 1), 2**63]
POOLS = {
    "in_channels": INTS_BAD + [np.int64(2), np.int32(1)],
    "out_channels": INTS_BAD + [np.int64(2)],
    "in_features": INTS_BAD + [np.int64(3)],
    "out_features": INTS_BAD + [np.int16(2)],
    "kernel_size": PAIRS_BAD + [np.int64(3), [2, 3], (np.int32(1), 2)],
    "stride": PAIRS_BAD + [[2, 1], np.int64(2), 10**9, (1, 10**9)],
    "padding": PAIRS_BAD + ["full", "SAME", "Valid", "", b"same", "valid", "same", [1, 2], np.int64(1), 10**9],
    "dilation": PAIRS_BAD + [[1, 2], 10**9, np.int64(2)],
    "groups": INTS_BAD + [3, 5, np.int64(1)],
    "bias": [1, 0, "True", None, np.bool_(True), torch.tensor(True), 1.0, [True]],
    "padding_mode": ["Zeros", "reflection", "constant", "", None, 1, ["zeros"], ("zeros",), np.array(["zeros"]),
                     np.array(["zeros", "zeros"]), b"zeros", torch.tensor([1])],
    "strategy": ["CL", "Ck", "fc", "", None, 1, b"cl", ["cl"], "cl ", np.array(["cl"])],
    "rate": [0, 0.5, 0.999, -1, float("nan"), float("inf"), -float("inf"), "4", None, True, False, 1j,
             torch.tensor(2.0), np.float64(1.5), Fraction(3, 2), Decimal("2"), 1e30, 1e308, [2], np.int64(3)],
    "backend": [None, 1, b"torch", "cudnn", "torch+", "+torch", "torch+torch+torch", " TORCH ", "Reference", "",
                "cuda", "cuda-chain", "torch+cuda", "auto+torch", ["torch"], "torch+torch"],
    "nonlinear": [True, "no", "", None, 1, 0, np.bool_(False), torch.tensor([1, 2]), torch.tensor(True), [False]],
    "dtype": ["float32", torch.int64, torch.bool, torch.complex64, torch.float16, torch.bfloat16, torch.float32, 32,
              np.float32, None, float],
    "device": ["junk", "cuda", "meta", torch.device("cpu"), "cpu", "cpu:0", 0, -1, None, "CPU", 1.5],
}
JOINT = {  # individually valid, jointly invalid (or valid: then it must work)
    "groups not dividing in": lambda kw: kw.update(in_channels=3, out_channels=2, groups=2, strategy="cl"),
    "groups not dividing out": lambda kw: kw.update(in_channels=4, out_channels=6, groups=4, strategy="cl"),
    "same with stride": lambda kw: kw.update(padding="same", stride=(1, 2)),
    "ck with groups": lambda kw: kw.update(strategy="ck", kernel_size=5, in_channels=2, out_channels=2, groups=2),
    "ck with 3x3": lambda kw: kw.update(strategy="ck", kernel_size=3, groups=1),
    "ck with even kernel": lambda kw: kw.update(strategy="ck", kernel_size=6, groups=1),
    "ck non-square": lambda kw: kw.update(strategy="ck", kernel_size=(5, 7), groups=1),
    "nonlinear composed backend": lambda kw: kw.update(nonlinear=True, backend="torch"),
    "nonlinear reference": lambda kw: kw.update(nonlinear=True, backend=("reference", "auto")[kw["in_channels"] % 2]),
    "depthwise": lambda kw: kw.update(in_channels=3, out_channels=3, groups=3, strategy="cl"),
    "same even dilated": lambda kw: kw.update(padding="same", stride=1, kernel_size=(2, 4), dilation=(3, 1),
                                              strategy="cl"),
}
JOINT_ARGS = {"groups not dividing in": ("groups",), "groups not dividing out": ("groups",),
              "same with stride": ("padding", "stride"), "ck with groups": ("strategy", "groups"),
              "ck with 3x3": ("strategy", "kernel_size"), "ck with even kernel": ("strategy", "kernel_size"),
              "ck non-square": ("strategy", "kernel_size"), "nonlinear composed backend": ("nonlinear", "backend"),
              "nonlinear reference": ("nonlinear",), "depthwise": ("groups",),
              "same even dilated": ("padding", "kernel_size", "dilation")}


def constructor_case(rng, kind) -> dict:
    kw = base_conv(rng) if kind == "conv" else base_linear(rng)
    if kind == "conv" and rng.random() < 0.25:
        joint = rng.choice(sorted(JOINT))
        JOINT[joint](kw)
        return dict(kind=kind, kwargs=kw, mutated=JOINT_ARGS[joint], joint=joint)
    args = CONV_ARGS if kind == "conv" else LINEAR_ARGS
    mutated = tuple(rng.sample(args, 2 if rng.random() < 0.2 else 1))
    for arg in mutated:
        kw[arg] = rng.choice(POOLS[arg])
    if kw.get("device") is None:
        kw.pop("device", None)
    return dict(kind=kind, kwargs=kw, mutated=mutated)


def dilated_extent(spec):
    return tuple(d * (k - 1) + 1 for d, k in zip(spec.dilation, spec.kernel_size))


def input_for(spec, rng, batch=None):
    """A valid input shape for a conv spec (None if impractically large)."""
    left, right, top, bottom = spec.pad
    extent_h, extent_w = dilated_extent(spec)
    if max(spec.pad) > 64 or max(extent_h, extent_w) > 64:
        return None
    need_h = max(1, extent_h - top - bottom)
    need_w = max(1, extent_w - left - right)
    if spec.padding_mode in ("reflect", "circular"):
        need_h, need_w = max(need_h, max(top, bottom) + 1), max(need_w, max(left, right) + 1)
    batch = rng.randint(1, 2) if batch is None else batch
    return (batch, spec.in_channels, need_h + rng.randint(0, 2), need_w + rng.randint(0, 2))


def compact_of(kind, kw):
    """``nn.Conv2d``/``nn.Linear`` from the same (possibly hostile) arguments."""
    if kind == "conv":
        return nn.Conv2d(**{k: kw[k] for k in NN_CONV_ARGS if k in kw})
    return nn.Linear(**{k: kw[k] for k in NN_LINEAR_ARGS if k in kw})


def reference_twin(kind, unit):
    """The float64 python_ref chain holding the unit's parameters, and (linear units) the compact
    layer it contracts to, from python_ref's contraction."""
    s = unit.spec
    if kind == "conv":
        ref = pr.ExpandedConv2d(s.in_channels, s.out_channels, s.kernel_size, s.stride, s.padding, s.dilation,
                                s.groups, s.bias, s.padding_mode, strategy=s.strategy, rate=s.rate,
                                nonlinear=unit.nonlinear, dtype=torch.float64)
    else:
        ref = pr.ExpandedLinear(s.in_features, s.out_features, s.bias, rate=s.rate, nonlinear=unit.nonlinear,
                                dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in unit.state_dict().items()})
    return ref


def filled_compact(kind, kw, ref):
    """``nn.Conv2d``/``nn.Linear`` built from the raw arguments, float64, holding the contraction
    of ``ref`` (a shape mismatch means the unit read an argument differently from torch)."""
    raw = {k: v for k, v in kw.items() if k not in ("dtype", "device")}
    compact = compact_of(kind, {**raw, "dtype": torch.float64})
    contracted = ref.contract()
    if compact.weight.shape != contracted.weight.shape or (compact.bias is None) != (contracted.bias is None):
        fail(f"the unit reads the arguments as {contracted}, torch as {compact}")
    with torch.no_grad():
        compact.weight.copy_(contracted.weight)
        if compact.bias is not None:
            compact.bias.copy_(contracted.bias)
    return compact


def run_constructor_case(case, rng):
    kind, kw, mutated = case["kind"], case["kwargs"], case["mutated"]
    cls = ec.FusedExpandConv2d if kind == "conv" else ec.FusedExpandLinear
    unit = outcome(lambda: cls(**kw))
    nn_args = NN_CONV_ARGS if kind == "conv" else NN_LINEAR_ARGS
    compact = outcome(lambda: compact_of(kind, kw))
    if isinstance(unit, Raised):
        if isinstance(compact, Raised) and not set(mutated) & set(nn_args):
            compact = None  # only arguments torch has no word on were changed: only a named refusal will do
        check_refusal(unit, compact, mutated, "constructor")
        return "refused"
    if isinstance(compact, Raised):
        fail(f"the unit accepted what torch refuses: {compact!r}")
    device, dtype = unit.layers[0].weight.device, unit.layers[0].weight.dtype
    if device.type == "meta":  # shapes only
        shape = input_for(unit.spec, rng) if kind == "conv" else (2, unit.spec.in_features)
        if shape is None:
            return "accepted"
        x = torch.empty(shape, device="meta", dtype=dtype)
        y, expected = outcome(lambda: unit(x)), outcome(lambda: compact(x))
        if isinstance(y, Raised):
            check_refusal(y, expected, ("input",), "meta call")
        elif isinstance(expected, Raised) or (y.shape, y.dtype, y.device) != (expected.shape, expected.dtype,
                                                                                 expected.device):
            fail(f"meta call: {tuple(y.shape)} {y.dtype} {y.device}, compact layer {expected!r}")
        return "accepted"
    if not dtype.is_floating_point:  # complex parameters: a complex input is refused, naming it
        x = torch.randn(2, unit.spec.in_channels, 6, 6, dtype=dtype) if kind == "conv" else \
            torch.randn(2, unit.spec.in_features, dtype=dtype)
        check_refusal(outcome(lambda: unit(x)), None, ("input",), "complex call")
        return "accepted"
    ref = reference_twin(kind, unit)
    compact64 = None if unit.nonlinear else filled_compact(kind, kw, ref)
    if kind == "conv":
        shape = input_for(unit.spec, rng)
        if shape is None:  # a huge dilation: too small an input, refused by name
            if max(dilated_extent(unit.spec)) > 64 and max(unit.spec.pad) <= 64:
                check_refusal(outcome(lambda: unit(torch.randn(1, unit.spec.in_channels, 5, 5, dtype=dtype))),
                              None, ("input",), "huge dilation call")
            return "accepted"
    else:
        shape = (2, unit.spec.in_features)
    x = torch.randn(shape, dtype=dtype).requires_grad_(True)
    got, expected = outcome(lambda: unit(x)), outcome(lambda: compact(x.detach()))
    if isinstance(got, Raised):  # as the compact layer does, or by name
        check_refusal(got, expected, ("input", *mutated), "call after construction")
        return "accepted"
    if isinstance(expected, Raised):
        fail(f"call after construction: the unit ran where the compact layer refuses ({expected!r})")
    compare_call(unit, ref, compact64, x, "call after construction", dtype)
    return "accepted"


# --- hostile inputs -------------------------------------------------------------------------------------
CONV_INPUTS = ["nonfinite", "nonfinite", "zero_batch", "zero_height", "zero_width", "zero_channels",
               "wrong_channels", "broadcast", "overlap", "expanded_channels", "wrong_dtype", "integer", "bool",
               "complex", "meta", "rank", "not_tensor", "grad_variants", "grad_variants", "pad_too_big",
               "too_small", "unbatched", "channels_last_nonfinite", "huge_values", "sparse_view"]
LINEAR_INPUTS = ["nonfinite", "nonfinite", "zero_batch", "zero_lead", "wrong_features", "broadcast", "overlap",
                 "wrong_dtype", "integer", "bool", "complex", "meta", "rank0", "not_tensor", "grad_variants",
                 "transposed", "huge_values"]
NOT_TENSORS = [None, 1.0, [1.0, 2.0], np.ones((1, 2, 3, 3)), "x", {"x": 1}]


def small_conv_kwargs(rng):
    kw = base_conv(rng)
    kw["padding_mode"] = rng.choice(pr.spec.PADDING_MODES)
    return kw


def input_case(rng, kind) -> dict:
    kw = small_conv_kwargs(rng) if kind == "conv" else base_linear(rng)
    kw["dtype"] = torch.float64 if rng.random() < 0.6 else torch.float32
    hostile = rng.choice(CONV_INPUTS if kind == "conv" else LINEAR_INPUTS)
    return dict(kind=f"{kind}_input", kwargs=kw, hostile=hostile, nan_at=rng.random(), freeze=rng.random(),
                grad_input=rng.random() < 0.7)


def with_nonfinite(x, rng):
    flat = x.detach().reshape(-1).clone()
    for _ in range(rng.randint(1, 3)):
        flat[rng.randrange(flat.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
    return flat.reshape(x.shape)


def hostile_input(case, unit, rng):
    """``(x, valid)``: the hostile input, and whether it is a valid one (must then match)."""
    h, dtype = case["hostile"], unit.layers[0].weight.dtype
    if case["kind"] == "conv_input":
        s = unit.spec
        shape = list(input_for(s, rng))
        n, c, hh, ww = shape
    else:
        c = unit.spec.in_features
        shape = [rng.randint(1, 3) for _ in range(rng.randint(0, 2))] + [c]
    new = lambda *size, dt=dtype: torch.randn(*size, dtype=dt)  # noqa: E731
    if h in ("nonfinite", "channels_last_nonfinite"):
        x = with_nonfinite(new(*shape), rng)
        if h == "channels_last_nonfinite":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, True
    if h == "huge_values":
        return new(*shape) * rng.choice([1e30, 1e-30, 1e150]), True
    if h == "zero_batch":
        return new(0, *shape[1:]) if case["kind"] == "conv_input" else new(0, c), True
    if h == "zero_lead":
        return new(2, 0, c), True
    if h == "zero_height":
        return new(n, c, 0, ww), True
    if h == "zero_width":
        return new(n, c, hh, 0), True
    if h == "zero_channels":
        return new(n, 0, hh, ww), False
    if h in ("wrong_channels", "wrong_features"):
        shape[1 if h == "wrong_channels" else -1] = c + rng.randint(1, 2)
        return new(*shape), False
    if h == "broadcast":
        return new(*([1] * len(shape))).expand(*shape), True
    if h == "overlap":  # windows of one storage, overlapping: read-only views are valid inputs
        strides = [rng.choice([0, 1]) for _ in shape[:-1]] + [1]
        base = new(sum((size - 1) * st for size, st in zip(shape, strides)) + 1)
        return torch.as_strided(base, shape, strides), True
    if h == "sparse_view":  # every 97th element of a larger storage, from an offset
        return new(n + 1, c, hh, 97 * ww)[1:, :, :, 3::97], True
    if h == "expanded_channels":
        return new(n, 1, hh, ww).expand(n, c, hh, ww), True
    if h == "transposed":
        return new(c, *shape[:-1]).movedim(0, -1), True
    if h == "wrong_dtype":
        other = rng.choice([d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16) if d != dtype])
        return new(*shape, dt=other), False
    if h == "integer":
        return torch.randint(0, 3, shape, dtype=rng.choice([torch.int64, torch.int32, torch.uint8])), False
    if h == "bool":
        return torch.rand(shape) > 0.5, False
    if h == "complex":
        return torch.randn(shape, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64), False
    if h == "meta":
        return torch.empty(shape, dtype=dtype, device="meta"), False
    if h == "rank":
        return new(*rng.choice([[c], [c, 4], [1, 1, c, 4, 4], [1, 1, 1, c, 4, 4]])), False
    if h == "rank0":
        return torch.randn((), dtype=dtype), False
    if h == "not_tensor":
        return rng.choice(NOT_TENSORS), False
    if h == "grad_variants":
        return new(*shape), True
    if h == "pad_too_big":  # reflect/circular padding as large as (or larger than) the input
        left, right, top, bottom = s.pad
        if s.padding_mode not in ("reflect", "circular") or not any(s.pad):
            return new(*shape), True
        size_h = max(1, max(top, bottom) - rng.randint(0, 1)) if top or bottom else hh
        size_w = max(1, max(left, right) - rng.randint(0, 1)) if left or right else ww
        return new(n, c, size_h, size_w), False
    if h == "too_small":
        return new(n, c, 1, 1), False
    if h == "unbatched":
        return new(c, hh, ww), True
    raise AssertionError(h)


def run_input_case(case, rng):
    kind = case["kind"].split("_")[0]
    cls = ec.FusedExpandConv2d if kind == "conv" else ec.FusedExpandLinear
    kw = case["kwargs"]
    unit = cls(**kw)
    dtype = kw["dtype"]
    ref = reference_twin(kind, unit)
    compact64 = filled_compact(kind, kw, ref)
    compact = compact_of(kind, kw)  # the compact layer in the unit's dtype, for its exceptions
    compact.load_state_dict({k: v.to(dtype) for k, v in compact64.state_dict().items()})
    if case["hostile"] == "grad_variants":  # freeze some parameters, the same ones in the reference
        for (name, p), (_, q) in zip(unit.named_parameters(), ref.named_parameters()):
            frozen = rng.random() < case["freeze"]
            p.requires_grad_(not frozen)
            q.requires_grad_(not frozen)
    x, valid = hostile_input(case, unit, rng)
    if valid and isinstance(outcome(lambda: compact(x)), Raised):
        valid = False  # e.g. an empty image: torch refuses it too; judged as hostile
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.device.type == "cpu":
        x = x.detach().requires_grad_(case["grad_input"])
    snap = snapshot(unit)
    got = outcome(lambda: unit(x))
    if isinstance(got, Raised):
        expected = outcome(lambda: compact(x))
        check_refusal(got, expected, ("input",), f"call with a {case['hostile']} input")
        assert_unchanged(unit, snap, "refused call")
        if valid:
            fail(f"refused a valid {case['hostile']} input that the compact layer takes: {got!r}")
        # a following valid call still matches the reference
        clean = torch.randn(input_for(unit.spec, rng) if kind == "conv" else (2, unit.spec.in_features),
                            dtype=dtype).requires_grad_(True)
        compare_call(unit, ref, compact64, clean, "valid call after the refused one", dtype)
        return "refused"
    expected = outcome(lambda: compact(x))
    if isinstance(expected, Raised):
        fail(f"accepted a {case['hostile']} input that the compact layer refuses ({expected!r})")
    compare_call(unit, ref, compact64, x, f"{case['hostile']} input", dtype)
    return "accepted"


# --- a unit moved to another dtype mid-training ----------------------------------------------------------
def dtype_switch_case(rng) -> dict:
    kind = rng.choice(["conv", "linear"])
    kw = base_conv(rng) if kind == "conv" else base_linear(rng)
    kw["dtype"] = torch.float32
    route = [rng.choice(["double", "half", "bfloat16", "float"]) for _ in range(rng.randint(1, 2))]
    return dict(kind="dtype_switch", unit_kind=kind, kwargs=kw, route=route, eval_first=rng.random() < 0.5)


DTYPE_OF = {"double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16, "float": torch.float32}


def run_dtype_switch_case(case, rng):
    kind, kw = case["unit_kind"], case["kwargs"]
    cls = ec.FusedExpandConv2d if kind == "conv" else ec.FusedExpandLinear
    unit = cls(**kw)
    shape = input_for(unit.spec, rng) if kind == "conv" else (3, unit.spec.in_features)
    opt = torch.optim.SGD(unit.parameters(), lr=0.05)
    dtype = torch.float32

    def step():
        x = torch.randn(shape, dtype=dtype)
        loss = unit(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def check(what):
        ref = reference_twin(kind, unit)
        compact64 = None if unit.nonlinear else ref.contract()
        compare_call(unit, ref, compact64, torch.randn(shape, dtype=dtype).requires_grad_(True), what, dtype)
        x = torch.randn(shape, dtype=dtype)
        with torch.no_grad():
            expected = ref(x.double())
        # below float64, the output's bound scales with the condition of its sums (compare_call)
        dtype_now = unit.layers[0].weight.dtype
        condition = condition_numbers(ref, x.double(), torch.ones_like(expected), {"output": expected})
        tol = tolerance(dtype_now) * (condition.get("output", 1.0) if dtype_now != torch.float64 else 1.0)
        with torch.no_grad():  # evaluation twice: the second must compose the same again
            for call in ("first", "second"):
                nonfinite_close(unit(x), expected, tol, f"{what}: no-grad {call} call")

    if case["eval_first"]:
        check("before training")
    step()
    for target in case["route"]:
        old = dtype
        getattr(unit, target)()
        dtype = DTYPE_OF[target]
        if old != dtype:  # the old dtype's input is refused by name, nothing changed
            snap = snapshot(unit)
            got = outcome(lambda: unit(torch.randn(shape, dtype=old)))
            if not isinstance(got, Raised):
                fail(f"after .{target}() a {old} input was accepted")
            check_refusal(got, None, ("input",), f"{old} input after .{target}()")
            assert_unchanged(unit, snap, f"refused {old} input")
        check(f"after .{target}()")
        step()
        check(f"after .{target}() and a step")
    return "accepted"


# --- the tests -------------------------------------------------------------------------------------------
def draw_case(index: int) -> dict:
    rng = case_rng(NAME, index)
    roll = rng.random()
    if roll < 0.3:
        case = constructor_case(rng, "conv")
    elif roll < 0.45:
        case = constructor_case(rng, "linear")
    elif roll < 0.75:
        case = input_case(rng, "conv")
    elif roll < 0.92:
        case = input_case(rng, "linear")
    else:
        case = dtype_switch_case(rng)
    case["torch_seed"] = rng.randrange(2**31)
    case["run_seed"] = rng.randrange(2**31)
    return case


def run_case(index: int) -> str:
    case = draw_case(index)
    torch.manual_seed(case["torch_seed"])
    rng = case_rng(NAME, index)
    rng.seed(case["run_seed"])
    if case["kind"] in ("conv", "linear"):
        return run_constructor_case(case, rng)
    if case["kind"] == "dtype_switch":
        return run_dtype_switch_case(case, rng)
    return run_input_case(case, rng)


def chunk_indices(chunk: int) -> range:
    return helpers.chunk_indices(TOTAL, CHUNKS, chunk)


@pytest.mark.parametrize("chunk", range(CHUNKS), ids=lambda c: f"chunk{c}")
def test_fuzz(chunk):
    COMPARED[chunk] = helpers.run_chunk(NAME, chunk_indices(chunk), run_case, draw_case)


def test_case_count():
    """At least scaled(500) hostile cases per run (each chunk fails unless it checked all of its own)."""
    planned = [len(chunk_indices(c)) for c in range(CHUNKS)]
    assert sum(planned) == TOTAL >= scaled(500) and min(planned) > 0
    if os.environ.get("EXPANDNETS_TEST_CASE") is not None:
        pytest.skip("EXPANDNETS_TEST_CASE runs a single case")
    if len(COMPARED) < CHUNKS:
        pytest.skip(f"only chunks {sorted(COMPARED)} ran in this session (the others were deselected or failed)")
    assert sum(COMPARED.values()) >= scaled(500)


def test_generator_covers_every_argument_and_input():
    """The cases drawn reach every constructor argument, joint combination, hostile input kind,
    backend and dtype route (over at least 5000 draws, whatever the scale: the rarest is expected 30 times)."""
    cases = [draw_case(i) for i in range(max(TOTAL, 5000))]
    mutated = {(c["kind"], a) for c in cases if c["kind"] in ("conv", "linear") for a in c["mutated"]}
    missing = [("conv", a) for a in CONV_ARGS if ("conv", a) not in mutated]
    missing += [("linear", a) for a in LINEAR_ARGS if ("linear", a) not in mutated]
    missing += [j for j in JOINT if not any(c.get("joint") == j for c in cases)]
    missing += [("conv", h) for h in CONV_INPUTS if not any(c["kind"] == "conv_input" and c["hostile"] == h
                                                           for c in cases)]
    missing += [("linear", h) for h in LINEAR_INPUTS if not any(c["kind"] == "linear_input" and c["hostile"] == h
                                                               for c in cases)]
    missing += [b for b in BACKENDS if not any(c["kwargs"].get("backend") == b for c in cases)]
    missing += [t for t in DTYPE_OF if not any(t in c.get("route", ()) for c in cases)]
    assert not missing, f"never drawn in {len(cases)} cases (seed {RUN_SEED}): {missing}"


# --- what the fuzzer found, pinned ------------------------------------------------------------------------
@pytest.mark.parametrize("make,text", [
    (lambda: ec.FusedExpandConv2d(2, 2, 3, nonlinear=torch.tensor([1, 2])), "nonlinear"),
    (lambda: ec.FusedExpandConv2d(2, 2, 3, nonlinear="no"), "nonlinear"),
    (lambda: ec.FusedExpandLinear(2, 2, nonlinear=None), "nonlinear"),
    (lambda: pr.ExpandedConv2d(2, 2, 3, nonlinear=1), "nonlinear"),
    (lambda: ec.FusedExpandConv2d(2, 2, 3, padding_mode=np.array(["zeros", "zeros"])), "padding_mode"),
    (lambda: ec.FusedExpandConv2d(2, 2, 3, padding_mode=np.array(["zeros"])), "padding_mode"),
    (lambda: ec.FusedExpandLinear(2, 2, rate=1e308), "rate"),
    (lambda: ec.FusedExpandConv2d(2, 2, 3, rate=1e30), "rate"),
    (lambda: ec.FusedExpandConv2d(2**63, 2, 3), "in_channels"),
    (lambda: ec.FusedExpandConv2d(2, 2, 1, dilation=2**63, backend="reference"), "dilation"),
    (lambda: ec.FusedExpandConv2d(2, 2, (1, 2**63)), "kernel_size"),
    (lambda: ec.FusedExpandConv2d(2, 2, 3, groups=2**64), "groups"),
], ids=["nonlinear tensor", "nonlinear str", "nonlinear None", "reference nonlinear int", "padding_mode array",
        "padding_mode 1-array", "rate overflows", "rate beyond int64", "channels beyond int64", "dilation beyond int64",
        "kernel beyond int64", "groups beyond int64"])
def test_found_refusals(make, text):
    with pytest.raises((ValueError, TypeError), match=text):
        make()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_meta_device_unit_runs_like_torch(kind, backend):
    """A unit built on the meta device (deferred initialisation, shape inference) runs there like
    the compact layer does, on every backend."""
    if kind == "conv":
        unit, compact = ec.FusedExpandConv2d(3, 4, 3, padding=1, device="meta", backend=backend), \
            nn.Conv2d(3, 4, 3, padding=1, device="meta")
        x = torch.empty(2, 3, 5, 5, device="meta")
    else:
        unit, compact = ec.FusedExpandLinear(3, 4, device="meta", backend=backend), nn.Linear(3, 4, device="meta")
        x = torch.empty(2, 3, device="meta")
    y, expected = unit(x), compact(x)
    assert (y.shape, y.dtype, y.device) == (expected.shape, expected.dtype, expected.device)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_image_refused_like_torch(backend):
    """An empty image (not an empty batch) is refused by name on every backend - nn.Conv2d refuses
    it too - instead of the unfused chain convolving the padding alone; an empty batch still runs."""
    unit = ec.FusedExpandConv2d(2, 3, 2, padding=1, backend=backend)
    for shape in [(2, 2, 0, 4), (1, 2, 3, 0), (2, 0, 4)]:
        with pytest.raises(ValueError, match="input has an empty spatial dimension"):
            unit(torch.randn(shape))
    assert unit(torch.randn(0, 2, 4, 4)).shape == (0, 3, 5, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_input_channel_ck_float32(backend):
    """A CK kernel composed from one input channel is a channels-last view; torch's oneDNN float32
    convolution misread it for a stride of 2 and an output one pixel wide (wrong values, read from
    outside the kernel). The unit must match the float64 chain there."""
    torch.manual_seed(0)
    for cout in (1, 3):
        unit = ec.FusedExpandConv2d(1, cout, 5, stride=(1, 2), padding=(1, 0), padding_mode="reflect",
                                    strategy="ck", rate=2, backend=backend)
        ref = reference_twin("conv", unit)
        for shape in [(2, 1, 4, 6), (1, 1, 7, 6), (2, 1, 9, 6)]:
            x = torch.randn(shape)
            nonfinite_close(unit(x), ref(x.double()), tolerance(torch.float32), f"{cout} outputs, input {shape}")
