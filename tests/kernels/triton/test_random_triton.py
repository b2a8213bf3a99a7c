"""Random valid specs through every kind of Triton kernel, against the torch composer, torch's
convolution or python_ref: outputs and every gradient, in float64 (REL_TOL[float64]) and, for a
share of the cases, float32 (REL_TOL[float32], the reference computed in float64 from the same
float32-rounded values).

Kinds (one parametrized chunk list each): ``cl`` (the CL/FC composition and bias fold through the
Triton composer), ``ck`` (one CK fold, and whole CK stacks through the composer's lean Function),
``conv`` (the implicit-GEMM and depthwise convolution kernels, forward and backward: groups,
depthwise and channel multipliers, stride, dilation, asymmetric padding, batch 1, channels_last,
non-contiguous inputs and output gradients, tile edges crossed), ``chain`` (the chain kernels
directly: CL with layer 3, CK pairs, ReLU or linear), ``cl_network`` / ``ck_network`` (the work lists,
several units of unequal random shapes per call) and ``unit`` (whole ``FusedExpandConv2d`` /
``FusedExpandLinear`` modules on the Triton backends against python_ref).

Every case draws its spec and its data from ``case_rng(name, index)`` alone, so a failure replays
from the seed that its message prints (EXPANDNETS_TEST_SEED=<seed>, same chunk). Case counts
scale with EXPANDNETS_TEST_SCALE. On a CPU the kernels run under the Triton interpreter
(TRITON_INTERPRET=1, set by conftest.py), about 0.02 s per program instance: the shapes are tiny,
with a few cases per kind just past a tile edge.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.compose.ck import compose_ck
from expandnets_cuda.compose.cl import compose_cl
from helpers import REL_TOL, case_rng, replay, scaled, twin

pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
# after the interpreter switch (conftest.py)
from expandnets_cuda.kernels.triton import chain_ops  # noqa: E402
from expandnets_cuda.kernels.triton import ck_ops  # noqa: E402
from expandnets_cuda.kernels.triton import conv_ops  # noqa: E402
from expandnets_cuda.kernels.triton import load_composer  # noqa: E402

composer = load_composer()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F64, F32 = torch.float64, torch.float32
FLOAT32_SHARE = 0.25  # of the cases, run in float32 against a float64 reference

# kind: (cases at scale 1, chunks). The chunks split a kind's cases into separate test items.
PLAN = {"cl": (26, 2), "ck": (22, 2), "conv": (58, 4), "chain": (20, 3), "cl_network": (8, 2), "ck_network": (6, 2),
        "unit": (16, 3)}
TOTAL = 150  # at least this many cases per run (times the scale)


# ------------------------------------------------------------------------------ comparison
def laid_out(t, layout):
    """An equal-valued copy of ``t`` (4-D) in ``layout``: ``contiguous``, ``channels_last``,
    ``strided`` (every other element of a twice-wider buffer: not contiguous in any format) or
    ``nhcw`` (channels stored between rows and columns: permuted, not channels_last)."""
    if t.dim() != 4 or layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        buf = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        view = buf[..., ::2]
        view.copy_(t)
        return view
    if layout == "nhcw":
        return t.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    raise ValueError(layout)


def pick_layout(rng):
    return rng.choices(["contiguous", "channels_last", "strided", "nhcw"], [4, 3, 2, 1])[0]


def assert_close(got, want, tol, what, magnitude=None):
    """Relative Frobenius error at most ``tol``. ``magnitude``: the same computation on the inputs'
    magnitudes (the sums of |terms|, >= |want| elementwise); the error is then measured against
    its norm, since rounding scales with the terms, not with a result that cancels (a bias
    gradient summed over a dozen pixels of mixed sign may be 100x smaller than its terms). A
    reference that is exactly zero (every ReLU of a tiny chain closed, say) wants a result of norm
    at most ``tol`` times that scale (1 without ``magnitude``)."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    scale = want.norm().item()
    if magnitude is not None:
        scale = max(scale, magnitude.detach().double().norm().item())
    err = (got - want).norm().item() / scale if scale > 0 else got.norm().item()
    worst = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} (max abs diff {worst:.3e})"


def out_layout_ok(out, x):
    """The kernels' outputs (and input gradients) keep ``x``'s format: channels_last for a
    channels_last ``x``, else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.is_contiguous(memory_format=torch.channels_last)
    return out.is_contiguous()


def compare(fast_fn, ref_fn, tensors, dtype, names, layouts=None, grad_layout="contiguous", same_layout=()):
    """``fast_fn(*inputs)`` against ``ref_fn(*inputs)`` (each returns a tensor or a list; ``None``
    entries are dropped): outputs, then the gradient of every non-None input for one random output
    gradient (in ``grad_layout`` where 4-D). ``tensors`` are float64; the fast side gets them in
    ``dtype`` and the reference the same values in float64, each in its ``layouts`` entry.
    ``same_layout``: indices of inputs whose format the outputs and input gradients must keep.
    Returns how many tensors it compared."""
    layouts = layouts or ["contiguous"] * len(tensors)
    tol = REL_TOL[dtype]

    def leaves(dt, magnitudes=False):
        return [None if t is None else laid_out(t.detach().to(dtype).to(dt).abs() if magnitudes else
                                                t.detach().to(dtype).to(dt), lay).requires_grad_(True)
                for t, lay in zip(tensors, layouts)]

    def outputs(fn, inputs):
        out = fn(*inputs)
        return [o for o in (out if isinstance(out, (list, tuple)) else [out]) if o is not None]

    fast_in, ref_in, mag_in = leaves(dtype), leaves(F64), leaves(F64, magnitudes=True)
    fast_out, ref_out = outputs(fast_fn, fast_in), outputs(ref_fn, ref_in)
    # the reference on magnitudes bounds every term (a ReLU only drops terms): the error scale
    mag_out = outputs(ref_fn, mag_in)
    assert len(fast_out) == len(ref_out), f"{len(fast_out)} outputs, the reference has {len(ref_out)}"
    assert all(o.dtype == dtype for o in fast_out), f"output dtypes {[o.dtype for o in fast_out]} != {dtype}"
    for k, (a, b) in enumerate(zip(fast_out, ref_out)):
        assert_close(a, b, tol, f"output {k}", mag_out[k])
        for j in same_layout:
            assert out_layout_ok(a, fast_in[j]), f"output {k}: strides {a.stride()} lost {names[j]}'s format"
    grads64 = [torch.randn(o.shape, dtype=F64, device=o.device) for o in ref_out]
    fast_g = [laid_out(g.to(dtype), grad_layout) for g in grads64]
    ref_g = [laid_out(g.to(dtype).to(F64), grad_layout) for g in grads64]
    idx = [k for k, t in enumerate(tensors) if t is not None]
    got = torch.autograd.grad(fast_out, [fast_in[k] for k in idx], fast_g, allow_unused=True, materialize_grads=True)
    want = torch.autograd.grad(ref_out, [ref_in[k] for k in idx], ref_g, allow_unused=True, materialize_grads=True)
    mags = torch.autograd.grad(mag_out, [mag_in[k] for k in idx], [g.abs() for g in ref_g], allow_unused=True,
                               materialize_grads=True)
    for k, a, b, m in zip(idx, got, want, mags):
        assert a.dtype == dtype, f"grad of {names[k]}: dtype {a.dtype}"
        assert_close(a, b, tol, f"grad of {names[k]}", m)
        if k in same_layout:
            assert out_layout_ok(a, fast_in[k]), f"grad of {names[k]}: strides {a.stride()} lost its format"
    return len(fast_out) + len(idx)


def rand(*shape):
    return torch.randn(*shape, dtype=F64, device=DEVICE)


def pick_dtype(rng):
    return "float32" if rng.random() < FLOAT32_SHARE else "float64"


DTYPES = {"float32": F32, "float64": F64}


# ------------------------------------------------------------------------------ cl: CL/FC composition
def cl_shape(rng, wide_share=0.25, max_tap=3):
    """(groups, a, i, c, o, kh, kw): mostly tiny grouped kxk units; some FC-shaped (one group, one
    tap) with widths past the 16-wide reductions and, rarely, the 32/64-wide output tiles."""
    if rng.random() < wide_share:
        top = 70 if rng.random() < 0.2 else 40
        return (1, *(rng.randint(1, top) for _ in range(4)), 1, 1)
    return (rng.choice([1, 1, 2, 3]), *(rng.randint(1, 6) for _ in range(4)), rng.randint(1, max_tap),
            rng.randint(1, max_tap))


def cl_tensors(shape, bias):
    g, a, i, c, o, kh, kw = shape
    maybe = (lambda n: rand(n)) if bias else (lambda n: None)
    return [rand(g * a, i, 1, 1), maybe(g * a), rand(g * c, a, kh, kw), maybe(g * c),
            rand(g * o, c, 1, 1), maybe(g * o)]


CL_NAMES = ["w1", "b1", "w2", "b2", "w3", "b3"]


def spec_cl(rng):
    return dict(shape=cl_shape(rng), bias=rng.random() < 0.6, dtype=pick_dtype(rng))


def run_cl(spec):
    g = spec["shape"][0]
    return compare(lambda *t: composer.cl(*t, g), lambda *t: compose_cl(*t, g),
                   cl_tensors(spec["shape"], spec["bias"]), DTYPES[spec["dtype"]], CL_NAMES)


# ------------------------------------------------------------------------------ ck: CK folds
def spec_ck(rng):
    dtype = pick_dtype(rng)
    if rng.random() < 0.7:  # one fold: later (o, c, A, A2) after earlier (c, i, B, B2)
        if rng.random() < 0.15:  # channels past the 16/32-wide tiles, one tap each
            o, c, i, taps = rng.randint(17, 40), rng.randint(17, 40), rng.randint(17, 40), [1, 1, 1, 1]
        else:
            o, c, i = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 6)
            taps = [rng.randint(1, 3) for _ in range(4)]
        return dict(mode="fold", o=o, c=c, i=i, later_taps=taps[:2], earlier_taps=taps[2:], dtype=dtype)
    depth = rng.choice([2, 2, 3])
    channels = [rng.randint(1, 4) for _ in range(depth + 1)]
    taps = [(rng.randint(1, 3), rng.randint(1, 3)) if depth == 2 else (rng.randint(1, 2), rng.randint(1, 2))
            for _ in range(depth)]
    return dict(mode="stack", channels=channels, taps=taps, bias=rng.random() < 0.6, dtype=dtype)


def run_ck(spec):
    dtype = DTYPES[spec["dtype"]]
    if spec["mode"] == "fold":
        later = rand(spec["o"], spec["c"], *spec["later_taps"])
        earlier = rand(spec["c"], spec["i"], *spec["earlier_taps"])
        return compare(ck_ops.ck_fold, pr.compose_two_kernels, [later, earlier], dtype, ["later", "earlier"])
    ch, taps, depth = spec["channels"], spec["taps"], len(spec["taps"])
    weights = [rand(ch[j + 1], ch[j], *taps[j]) for j in range(depth)]
    biases = [rand(ch[j + 1]) for j in range(depth)] if spec["bias"] else [None] * depth

    def split(t):
        return list(t[:depth]), (list(t[depth:]) if spec["bias"] else None)
    return compare(lambda *t: composer.ck(*split(t)), lambda *t: compose_ck(*split(t)),
                   weights + biases, dtype, [f"w{j}" for j in range(depth)] + [f"b{j}" for j in range(depth)])


# ------------------------------------------------------------------------------ conv: convolution kernels
def _extent(rng, kernel, pad, stride, dil, big=False):
    """An input extent giving at least one output pixel (and, when ``big``, a few more)."""
    need = max(1, dil * (kernel - 1) + 1 - 2 * pad)
    return need + rng.randint(0, 3 if not big else 6) * rng.choice([1, stride])


def spec_conv(rng):
    kind = rng.choices(["dense", "grouped", "depthwise", "multiplier", "wide_out", "split_wgrad"],
                       [30, 22, 22, 10, 8, 3])[0]
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dil = (rng.randint(1, 3), rng.randint(1, 3))
    pad = (rng.randint(0, kh), rng.randint(0, kw))
    n = 1 if rng.random() < 0.4 else rng.randint(2, 3)
    if kind == "dense":
        g, cg, og = 1, rng.randint(1, 8), rng.randint(1, 8)
    elif kind == "grouped":
        g, cg, og = rng.randint(2, 3), rng.randint(1, 4), rng.randint(1, 5)
    elif kind == "depthwise":  # groups == C == O: the elementwise kernels; a few past the 32-channel tile
        g, cg, og = (rng.randint(33, 36) if rng.random() < 0.15 else rng.randint(2, 6)), 1, 1
    elif kind == "multiplier":  # groups == C, O a multiple: the GEMM kernels with one input channel a group
        g, cg, og = rng.randint(2, 4), 1, rng.randint(2, 3)
    elif kind == "wide_out":  # past the 64-wide output-channel tile (and the 64-wide wgrad column tile)
        g, cg, og, kh, kw, n = 1, rng.randint(1, 3), rng.randint(65, 70), rng.randint(1, 2), 1, 1
        pad, dil = (rng.randint(0, kh), rng.randint(0, kw)), (1, 1)
    else:  # >= 2048 output pixels: the weight gradient's pixel reduction in several split partials
        g, cg, og, n = 1, rng.randint(1, 2), rng.randint(1, 3), 2
        kh, kw, stride, dil, pad = 1, 1, (1, 1), (1, 1), (0, 0)
        side = rng.randint(32, 34)
        return dict(kind=kind, n=n, g=g, cg=cg, og=og, hw=(side, side), k=(kh, kw), stride=stride, pad=pad,
                    dil=dil, bias=rng.random() < 0.6, layout=pick_layout(rng), grad_layout=pick_layout(rng),
                    dtype=pick_dtype(rng))
    big = rng.random() < 0.3  # N*P*Q past the 64-pixel tile more often
    hw = (_extent(rng, kh, pad[0], stride[0], dil[0], big), _extent(rng, kw, pad[1], stride[1], dil[1], big))
    return dict(kind=kind, n=n, g=g, cg=cg, og=og, hw=hw, k=(kh, kw), stride=stride, pad=pad, dil=dil,
                bias=rng.random() < 0.6, layout=pick_layout(rng), grad_layout=pick_layout(rng), dtype=pick_dtype(rng))


def run_conv(spec):
    g, k = spec["g"], spec["k"]
    x = rand(spec["n"], g * spec["cg"], *spec["hw"])
    w = rand(g * spec["og"], spec["cg"], *k)
    b = rand(g * spec["og"]) if spec["bias"] else None
    s, p, d = list(spec["stride"]), list(spec["pad"]), list(spec["dil"])
    return compare(lambda x, w, b: conv_ops.conv2d(x, w, b, s, p, d, g, True),
                   lambda x, w, b: F.conv2d(x, w, b, s, p, d, g),
                   [x, w, b], DTYPES[spec["dtype"]], ["x", "w", "b"], layouts=[spec["layout"], "contiguous", None],
                   grad_layout=spec["grad_layout"], same_layout=(0,))


# ------------------------------------------------------------------------------ chain: chain kernels
def spec_chain(rng):
    mode = rng.choices(["cl", "ck"], [65, 35])[0]
    wide = rng.random() < 0.15  # one channel extent past the 16-wide tiles
    if mode == "cl":
        g, mg = rng.choice([1, 1, 2, 3]), rng.randint(1, 3)
        a, c, o = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 5)
        k1 = (1, 1)
        has_l3 = rng.random() < 0.85
    else:
        g, mg, a, c, o = 1, rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 4)
        k1 = (3, 3) if rng.random() < 0.6 else (rng.randint(1, 3), rng.randint(1, 3))
        has_l3 = rng.random() < 0.2
    if wide:
        which = rng.choice(["mg", "a", "c", "o"] if has_l3 else ["mg", "a", "c"])
        sizes = dict(mg=mg, a=a, c=c, o=o)
        taps1 = k1[0] * k1[1]
        # mg: K1 = mg * taps1 > 16
        sizes[which] = -(-17 // taps1) + rng.randint(0, 2) if which == "mg" else rng.randint(17, 20)
        mg, a, c, o = sizes["mg"], sizes["a"], sizes["c"], sizes["o"]
    k2 = (rng.randint(1, 3), rng.randint(1, 3))
    d1 = (rng.randint(1, 2), rng.randint(1, 2))
    stride, dil = (rng.randint(1, 2), rng.randint(1, 2)), (rng.randint(1, 2), rng.randint(1, 2))
    pads = [rng.randint(0, 2) for _ in range(4)]  # left, right, top, bottom
    n = 1 if rng.random() < 0.5 else 2
    # The smallest input with one output pixel, plus a few (past the 32/16-pixel tiles sometimes).
    extra = 7 if rng.random() < 0.3 else 3
    h = max(1, d1[0] * (k1[0] - 1) + dil[0] * (k2[0] - 1) + 1 - pads[2] - pads[3]) + rng.randint(0, extra)
    w = max(1, d1[1] * (k1[1] - 1) + dil[1] * (k2[1] - 1) + 1 - pads[0] - pads[1]) + rng.randint(0, extra)
    return dict(mode=mode, n=n, hw=(h, w), g=g, mg=mg, a=a, c=c, o=o if has_l3 else None, k1=k1, k2=k2, d1=d1,
                stride=stride, dil=dil, pads=pads, bias=rng.random() < 0.6, relu=rng.random() < 0.7,
                layout=pick_layout(rng), grad_layout=pick_layout(rng), dtype=pick_dtype(rng))


def run_chain(spec):
    g, mg, a, c, o, bias, relu = spec["g"], spec["mg"], spec["a"], spec["c"], spec["o"], spec["bias"], spec["relu"]
    pads, d1, stride, dil = spec["pads"], list(spec["d1"]), list(spec["stride"]), list(spec["dil"])
    x = rand(spec["n"], g * mg, *spec["hw"])
    w1, w2 = rand(g * a, mg, *spec["k1"]), rand(g * c, a, *spec["k2"])
    w3 = rand(g * o, c, 1, 1) if o else None
    b1, b2 = (rand(g * a), rand(g * c)) if bias else (None, None)
    b3 = rand(g * o) if o and bias else None

    def ref(x, w1, b1, w2, b2, w3, b3):
        z1 = F.conv2d(F.pad(x, pads), w1, b1, 1, 0, d1, g)
        z2 = F.conv2d(torch.relu(z1) if relu else z1, w2, b2, stride, 0, dil, g)
        return z2 if w3 is None else F.conv2d(torch.relu(z2) if relu else z2, w3, b3, 1, 0, 1, g)

    def fast(x, w1, b1, w2, b2, w3, b3):
        return chain_ops.chain(x, w1, b1, w2, b2, w3, b3, pads, d1, stride, dil, g, relu, True)
    return compare(fast, ref, [x, w1, b1, w2, b2, w3, b3], DTYPES[spec["dtype"]],
                   ["x", "w1", "b1", "w2", "b2", "w3", "b3"], layouts=[spec["layout"]] + ["contiguous"] * 6,
                   grad_layout=spec["grad_layout"], same_layout=(0,))


# ------------------------------------------------------------------------------ work lists
def spec_cl_network(rng):
    units = rng.randint(2, 5)
    return dict(shapes=[cl_shape(rng, wide_share=0.15, max_tap=2) for _ in range(units)], bias=rng.random() < 0.6,
                dtype=pick_dtype(rng))


def _per_unit(flat, sizes):
    out, at = [], 0
    for size in sizes:
        out.append(flat[at:at + size])
        at += size
    return out


def run_cl_network(spec):
    units = [cl_tensors(shape, spec["bias"]) for shape in spec["shapes"]]
    groups = [shape[0] for shape in spec["shapes"]]

    def rebuild(flat):
        return [(*t, g) for t, g in zip(_per_unit(flat, [6] * len(units)), groups)]

    def fast(*flat):
        return [t for pair in composer.cl_network(rebuild(flat)) for t in pair]

    def ref(*flat):
        return [t for unit in rebuild(flat) for t in compose_cl(*unit)]
    names = [f"unit {u} {n}" for u in range(len(units)) for n in CL_NAMES]
    return compare(fast, ref, [t for unit in units for t in unit], DTYPES[spec["dtype"]], names)


def spec_ck_network(rng):
    units = []
    for _ in range(rng.randint(2, 4)):
        depth = rng.choice([2, 2, 3])
        channels = [rng.randint(1, 3) for _ in range(depth + 1)]
        taps = [(3, 3) if rng.random() < 0.1 else (rng.randint(1, 2), rng.randint(1, 2)) for _ in range(depth)]
        units.append((channels, taps))
    return dict(units=units, bias=rng.random() < 0.6, dtype=pick_dtype(rng))


def run_ck_network(spec):
    bias, sizes, flat, names = spec["bias"], [], [], []
    for u, (channels, taps) in enumerate(spec["units"]):
        depth = len(taps)
        flat += [rand(channels[j + 1], channels[j], *taps[j]) for j in range(depth)]
        flat += [rand(channels[j + 1]) for j in range(depth)] if bias else []
        names += [f"unit {u} w{j}" for j in range(depth)] + ([f"unit {u} b{j}" for j in range(depth)] if bias else [])
        sizes.append(depth * (2 if bias else 1))

    def rebuild(t):
        units = []
        for part in _per_unit(list(t), sizes):
            depth = len(part) // (2 if bias else 1)
            units.append((part[:depth], part[depth:] if bias else None))
        return units

    def fast(*t):
        return [x for pair in composer.ck_network(rebuild(t)) for x in pair]

    def ref(*t):
        return [x for w, b in rebuild(t) for x in compose_ck(w, b)]
    return compare(fast, ref, flat, DTYPES[spec["dtype"]], names)


# ------------------------------------------------------------------------------ unit: whole modules
LINEAR_BACKENDS = ["triton", "triton+torch", "torch+triton", "triton-chain"]
NONLINEAR_BACKENDS = ["triton", "triton-chain"]


def spec_unit(rng):
    nonlinear = rng.random() < 0.35
    backend = rng.choice(NONLINEAR_BACKENDS if nonlinear else LINEAR_BACKENDS)
    rate = rng.choice([1, 1.5, 2, 3])
    common = dict(nonlinear=nonlinear, backend=backend, dtype=pick_dtype(rng), layout=pick_layout(rng))
    kind = rng.choices(["cl", "ck", "fc"], [60, 25, 15])[0]
    if kind == "fc":
        lead = [rng.randint(1, 3) for _ in range(rng.randint(1, 2))]
        i, o = rng.randint(1, 6), rng.randint(1, 6)
        return dict(kind=kind, kwargs=dict(in_features=i, out_features=o, bias=rng.random() < 0.7, rate=rate),
                    shape=(*lead, i), **common)
    if kind == "cl":
        g = rng.choice([1, 1, 2, "depthwise"])
        if g == "depthwise":
            g = cin = cout = rng.randint(2, 4)
        else:
            cin, cout = g * rng.randint(1, 3), g * rng.randint(1, 3)
        kernel = (rng.randint(1, 3), rng.randint(1, 3))
    else:
        g, cin, cout, rate = 1, rng.randint(1, 3), rng.randint(1, 3), rng.choice([1, 1.5, 2])
        k = 7 if rng.random() < 0.1 else 5
        kernel = (k, k)
    stride = (rng.randint(1, 2), rng.randint(1, 2))
    dil = (rng.randint(1, 2), rng.randint(1, 2))
    padding = rng.choice(["int", "pair", "same", "valid"])
    padding = {"int": rng.randint(0, 2), "pair": (rng.randint(0, 2), rng.randint(0, 2)), "valid": "valid",
               "same": "same" if stride == (1, 1) else 1}[padding]
    mode = rng.choices(["zeros", "reflect", "replicate", "circular"], [70, 10, 10, 10])[0]
    kwargs = dict(in_channels=cin, out_channels=cout, kernel_size=kernel, stride=stride, padding=padding,
                  dilation=dil, groups=g, bias=rng.random() < 0.7, padding_mode=mode, strategy=kind, rate=rate)
    left, right, top, bottom = pr.ConvUnitSpec.create(**kwargs).pad
    n = rng.randint(1, 2)
    # At least one output pixel, and every pad (reflect: strictly) inside the input.
    h = max(dil[0] * (kernel[0] - 1) + 1 - top - bottom, top + 1, bottom + 1, 2) + rng.randint(0, 3)
    w = max(dil[1] * (kernel[1] - 1) + 1 - left - right, left + 1, right + 1, 2) + rng.randint(0, 3)
    return dict(kind=kind, kwargs=kwargs, shape=(n, cin, h, w), **common)


def run_unit(spec):
    """Float32 units run their convolutions exactly (no TF32 on a GPU: ``exact_fp32`` follows
    cuDNN's switch), so REL_TOL[float32] holds."""
    allow = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        return _run_unit(spec)
    finally:
        torch.backends.cudnn.allow_tf32 = allow


def _run_unit(spec):
    dtype, tol = DTYPES[spec["dtype"]], REL_TOL[DTYPES[spec["dtype"]]]
    fc = spec["kind"] == "fc"
    cls = (ec.FusedExpandLinear, pr.ExpandedLinear) if fc else (ec.FusedExpandConv2d, pr.ExpandedConv2d)
    fast, ref = twin(*cls, **spec["kwargs"], nonlinear=spec["nonlinear"], dtype=F64, device=DEVICE,
                     backend=spec["backend"])
    fast.to(dtype)
    with torch.no_grad():  # the reference holds the fast module's (rounded) values, in float64
        for p, q in zip(ref.parameters(), fast.parameters()):
            p.copy_(q.double())
    x64 = rand(*spec["shape"]).to(dtype).double()
    layout = spec["layout"] if x64.dim() == 4 else "contiguous"
    x_fast, x_ref = laid_out(x64.to(dtype), layout).requires_grad_(True), laid_out(x64, layout).requires_grad_(True)
    y_fast, y_ref = fast(x_fast), ref(x_ref)
    assert y_fast.dtype == dtype, f"output dtype {y_fast.dtype}"
    # the reference on magnitudes (|x|, |parameters|, |grad|) gives each result's error scale
    mag = copy.deepcopy(ref)
    with torch.no_grad():
        for p in mag.parameters():
            p.abs_()
    x_mag = x_ref.detach().abs().requires_grad_(True)
    y_mag = mag(x_mag)
    assert_close(y_fast, y_ref, tol, "output", y_mag)
    grad = torch.randn_like(y_ref).to(dtype)
    fast_params, ref_params = dict(fast.named_parameters()), dict(ref.named_parameters())
    assert fast_params.keys() == ref_params.keys()
    names = list(ref_params)
    mag_params = dict(mag.named_parameters())
    got = torch.autograd.grad(y_fast, [x_fast, *(fast_params[n] for n in names)], grad)
    want = torch.autograd.grad(y_ref, [x_ref, *(ref_params[n] for n in names)], grad.double())
    mags = torch.autograd.grad(y_mag, [x_mag, *(mag_params[n] for n in names)], grad.double().abs())
    for name, a, b, m in zip(["x", *names], got, want, mags):
        assert a.dtype == dtype, f"grad of {name}: dtype {a.dtype}"
        assert_close(a, b, tol, f"grad of {name}", m)
    return 1 + len(got)


# ------------------------------------------------------------------------------ the tests
KINDS = {"cl": (spec_cl, run_cl), "ck": (spec_ck, run_ck), "conv": (spec_conv, run_conv),
         "chain": (spec_chain, run_chain), "cl_network": (spec_cl_network, run_cl_network),
         "ck_network": (spec_ck_network, run_ck_network), "unit": (spec_unit, run_unit)}


def case_name(kind):
    return f"test_random_triton:{kind}"


def chunks():
    for kind, (count, parts) in PLAN.items():
        parts = min(parts, scaled(count))
        for chunk in range(parts):
            yield pytest.param(kind, chunk, parts, id=f"{kind}-{chunk}")


def test_the_plan_compares_enough_cases():
    counts = {kind: scaled(count) for kind, (count, _) in PLAN.items()}
    assert set(counts) == set(KINDS) and min(counts.values()) >= 1, counts
    assert sum(counts.values()) >= scaled(TOTAL), counts
    assert {p.values[0] for p in chunks()} == set(KINDS)


@pytest.mark.parametrize("kind,chunk,parts", list(chunks()))
def test_random_specs_match_the_reference(kind, chunk, parts):
    """Cases ``chunk, chunk + parts, ...`` of ``kind``: every one compared (outputs and gradients),
    every failure reported with its replay line."""
    make_spec, run = KINDS[kind]
    name, indices = case_name(kind), range(chunk, scaled(PLAN[kind][0]), parts)
    failures, compared, tensors = [], 0, 0
    for index in indices:
        rng = case_rng(name, index)
        spec = make_spec(rng)
        torch.manual_seed(rng.randrange(2**31))  # the case's data: replays with its spec
        try:
            n = run(spec)
        except Exception as err:  # noqa: BLE001  (a crash of one case is reported like a mismatch)
            text = str(err).split("\nassert ")[0]  # without pytest's restatement of the comparison
            failures.append(f"{replay(name, index, spec)} (test id {kind}-{chunk}): {type(err).__name__}: {text}")
            continue
        assert n > 0, replay(name, index, spec)
        compared, tensors = compared + 1, tensors + n
    assert not failures, f"{len(failures)} of {len(indices)} {kind} cases failed:\n" + "\n".join(failures)
    assert compared == len(indices) > 0, (kind, chunk, compared, len(indices))
