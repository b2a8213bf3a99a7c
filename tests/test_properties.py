"""Property test at scale: for at least ``scaled(1000)`` random valid specs per run, the torch
backend computes the unfused chain of ``python_ref`` in float64 - output, input gradient and the
gradient of every expanded parameter (``helpers.compare_units``).

Specs cover CL (any kernel, grouped, depthwise, depthwise multiplier), CK (odd k >= 5), FC (with
any number of leading dims, unbatched too), stride, dilation, every padding mode and padding form
(int, pair, list, 'same', 'valid'), integer and non-integer rates, bias on/off, batch 1, unbatched
conv inputs and input layouts: contiguous, channels_last, strided slices, transposed views,
storage offsets and broadcast (stride-0) batches.

Every case is drawn from ``case_rng(NAME, index)`` alone (parameters and gradients too, through a
torch seed drawn from it), so a failure replays from the run seed and its index: the message
prints ``replay(...)`` with the spec, and ``EXPANDNETS_TEST_CASE=<index>`` runs just that case
(in the chunk that owns it).
"""
import os

import pytest
import torch

import expandnets_cuda as ec
import helpers
import python_ref as pr
from helpers import REL_TOL, RUN_SEED, assert_rel_close, case_rng, compare_units, scaled, twin

NAME = "properties"
CHUNKS = 10
TOTAL = scaled(1000, minimum=CHUNKS)
RATES = [1, 1.25, 1.5, 2, 3, 4]
LAYOUTS_4D = ["contiguous", "channels_last", "slice_w", "slice_hw", "transposed", "offset", "broadcast",
              "channels_last_slice"]
LAYOUTS_FC = ["contiguous", "slice", "transposed", "offset", "broadcast"]

COMPARED = {}  # chunk -> number of cases compared (all of them, or the chunk failed)


@pytest.fixture(autouse=True)
def _one_thread():
    with helpers.torch_threads(1):
        yield


def chunk_indices(chunk: int) -> range:
    return helpers.chunk_indices(TOTAL, CHUNKS, chunk)


# --- spec generation -------------------------------------------------------------------------------
def _pair(rng, low, high, square_bias=0.5):
    a = rng.randint(low, high)
    return (a, a) if rng.random() < square_bias else (a, rng.randint(low, high))


def _as_form(rng, pair):
    """An int/pair argument in one of the forms nn.Conv2d takes."""
    if pair[0] == pair[1] and rng.random() < 0.5:
        return pair[0]
    return list(pair) if rng.random() < 0.15 else tuple(pair)


def conv_spec(rng) -> dict:
    strategy = "ck" if rng.random() < 0.22 else "cl"
    if strategy == "ck":
        groups = 1
        cin, cout = rng.randint(1, 3), rng.randint(1, 3)
        k = rng.choice([5, 5, 7, 7, 7]) if rng.random() > 0.04 else 9
        kernel = k if rng.random() < 0.5 else (k, k)
        stride = _pair(rng, 1, 2, 0.7) if rng.random() < 0.4 else (1, 1)
        dilation = _pair(rng, 1, 2, 0.7) if rng.random() < 0.3 else (1, 1)
    else:
        shape = rng.random()
        if shape < 0.15:  # depthwise: groups == in == out
            groups = rng.randint(1, 4)
            cin = cout = groups
        elif shape < 0.22:  # depthwise with a channel multiplier
            groups = rng.randint(1, 3)
            cin, cout = groups, groups * rng.randint(2, 3)
        else:
            groups = rng.choice([1, 1, 1, 2, 3])
            cin, cout = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
        kernel = _pair(rng, 1, 4, 0.5)
        stride = _pair(rng, 1, 3, 0.6) if rng.random() < 0.45 else (1, 1)
        dilation = _pair(rng, 1, 3, 0.6) if rng.random() < 0.4 else (1, 1)
    kpair = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    form = rng.random()
    if form < 0.15 and stride == (1, 1):
        padding = "same"
    elif form < 0.25:
        padding = "valid"
    else:
        padding = _as_form(rng, _pair(rng, 0, 4, 0.5))
    mode = rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"])
    spec = dict(kind="conv", strategy=strategy, in_channels=cin, out_channels=cout, kernel_size=kernel,
                stride=_as_form(rng, stride), padding=padding, dilation=_as_form(rng, dilation), groups=groups,
                bias=rng.random() < 0.6, padding_mode=mode, rate=rng.choice(RATES))
    left, right, top, bottom = pr.ConvUnitSpec.create(*conv_args(spec), strategy, spec["rate"]).pad
    # The padded input must hold the dilated kernel; reflect needs padding < size, circular <= size.
    need_h = dilation[0] * (kpair[0] - 1) + 1 - top - bottom
    need_w = dilation[1] * (kpair[1] - 1) + 1 - left - right
    extra = 1 if mode == "reflect" else 0
    low_h = max(need_h, 1, (max(top, bottom) + extra) if mode in ("reflect", "circular") else 1)
    low_w = max(need_w, 1, (max(left, right) + extra) if mode in ("reflect", "circular") else 1)
    height, width = low_h + rng.randint(0, 4), low_w + rng.randint(0, 4)
    while not _sees_input(height, width, (left, right, top, bottom), kpair, stride, dilation):
        height, width = height + 1, width + 1  # zero padding and a stride can step over the input
    batch = rng.choice([1, 1, 2, 3])
    unbatched = rng.random() < 0.08
    layout = "contiguous" if unbatched else rng.choice(LAYOUTS_4D)
    spec["input"] = dict(shape=(cin, height, width) if unbatched else (batch, cin, height, width), layout=layout)
    return spec


def _sees_input(height, width, pad, kernel, stride, dilation) -> bool:
    """Does some output read the input itself, not only zero padding? (Else the output, or the
    input gradient, is all zeros and the comparison would prove nothing.)"""
    mask = torch.nn.functional.pad(torch.ones(1, 1, height, width), pad)
    return bool(torch.nn.functional.conv2d(mask, torch.ones(1, 1, *kernel), stride=stride, dilation=dilation).any())


def fc_spec(rng) -> dict:
    fin, fout = rng.randint(1, 6), rng.randint(1, 6)
    lead = tuple(rng.randint(1, 3) for _ in range(rng.choice([0, 1, 1, 1, 2, 3])))
    return dict(kind="fc", in_features=fin, out_features=fout, bias=rng.random() < 0.6, rate=rng.choice(RATES),
                input=dict(shape=lead + (fin,), layout=rng.choice(LAYOUTS_FC) if lead else "contiguous"))


def draw_spec(index: int) -> dict:
    rng = case_rng(NAME, index)
    spec = fc_spec(rng) if rng.random() < 0.25 else conv_spec(rng)
    spec["torch_seed"] = rng.randrange(2**31)
    return spec


def conv_args(spec):
    return (spec["in_channels"], spec["out_channels"], spec["kernel_size"], spec["stride"], spec["padding"],
            spec["dilation"], spec["groups"], spec["bias"], spec["padding_mode"])


def make_input(shape, layout) -> torch.Tensor:
    """A float64 tensor of ``shape`` whose memory layout is ``layout``."""
    shape = tuple(shape)
    new = lambda *s: torch.randn(*s, dtype=torch.float64)  # noqa: E731
    if layout == "contiguous":
        return new(*shape)
    if layout == "channels_last":
        return new(*shape).contiguous(memory_format=torch.channels_last)
    if layout == "channels_last_slice":
        return new(*shape[:-1], 2 * shape[-1]).contiguous(memory_format=torch.channels_last)[..., 1::2]
    if layout in ("slice_w", "slice"):
        return new(*shape[:-1], 2 * shape[-1])[..., ::2]
    if layout == "slice_hw":
        return new(*shape[:-2], 2 * shape[-2] + 1, 3 * shape[-1])[..., 1::2, ::3]
    if layout == "transposed":
        return new(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)
    if layout == "offset":
        return new(shape[0] + 2, *shape[1:])[1:-1]
    if layout == "broadcast":
        return new(1, *shape[1:]).expand(*shape)
    raise AssertionError(f"unknown layout {layout!r}")


def build(spec):
    """``(fused unit, python_ref twin, input)`` of a spec, every tensor from the spec's torch seed."""
    torch.manual_seed(spec["torch_seed"])
    common = dict(rate=spec["rate"], dtype=torch.float64, backend="torch")
    if spec["kind"] == "fc":
        fast, ref = twin(ec.FusedExpandLinear, pr.ExpandedLinear, spec["in_features"], spec["out_features"],
                         spec["bias"], **common)
    else:
        fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, *conv_args(spec), strategy=spec["strategy"],
                         **common)
    x = make_input(spec["input"]["shape"], spec["input"]["layout"])
    assert tuple(x.shape) == tuple(spec["input"]["shape"])
    return fast, ref, x


def run_case(index: int) -> dict:
    """Compare one case (raises on a mismatch); returns its spec."""
    spec = draw_spec(index)
    fast, ref, x = build(spec)
    compare_units(fast, ref, x, REL_TOL[torch.float64], f"case {index}")
    with torch.no_grad():  # evaluation, twice: the second call must compose the same again
        expected = ref(x)
        for call in ("first", "second"):
            assert_rel_close(fast(x), expected, REL_TOL[torch.float64], f"case {index} no-grad output ({call} call)")
    return spec


# --- the tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", range(CHUNKS), ids=lambda c: f"chunk{c}")
def test_torch_backend_matches_reference(chunk):
    COMPARED[chunk] = helpers.run_chunk(NAME, chunk_indices(chunk), run_case, draw_spec)


def test_case_count():
    """Every run compares at least scaled(1000) cases: the chunks partition [0, TOTAL), and each chunk
    that ran here compared all of its cases (it fails otherwise)."""
    planned = [len(chunk_indices(c)) for c in range(CHUNKS)]
    assert sum(planned) == TOTAL >= scaled(1000) and min(planned) > 0
    assert sorted(i for c in range(CHUNKS) for i in chunk_indices(c)) == list(range(TOTAL))
    if os.environ.get("EXPANDNETS_TEST_CASE") is not None:
        pytest.skip("EXPANDNETS_TEST_CASE runs a single case")
    if len(COMPARED) < CHUNKS:
        pytest.skip(f"only chunks {sorted(COMPARED)} ran in this session (the others were deselected or failed)")
    assert sum(COMPARED.values()) >= scaled(1000)


def test_generator_covers_the_spec_space():
    """The first max(TOTAL, 2000) specs reach every feature the docstring promises (a generator
    that drifted to a corner would pass the comparisons while testing little)."""
    specs = [draw_spec(i) for i in range(max(TOTAL, 2000))]
    convs = [s for s in specs if s["kind"] == "conv"]
    seen = {
        "fc": any(s["kind"] == "fc" for s in specs),
        "fc 1-D": any(s["kind"] == "fc" and len(s["input"]["shape"]) == 1 for s in specs),
        "fc 4-D": any(s["kind"] == "fc" and len(s["input"]["shape"]) == 4 for s in specs),
        "ck": any(s["strategy"] == "ck" for s in convs),
        "ck 7": any(s["strategy"] == "ck" and s["kernel_size"] in (7, (7, 7)) for s in convs),
        "depthwise": any(s["groups"] == s["in_channels"] == s["out_channels"] > 1 for s in convs),
        "grouped": any(1 < s["groups"] < s["in_channels"] for s in convs),
        "unbatched": any(len(s["input"]["shape"]) == 3 for s in convs),
        "batch 1": any(s["input"]["shape"][0] == 1 for s in convs if len(s["input"]["shape"]) == 4),
        "stride": any(s["stride"] not in (1, (1, 1), [1, 1]) for s in convs),
        "dilation": any(s["dilation"] not in (1, (1, 1), [1, 1]) for s in convs),
        "no bias": any(not s["bias"] for s in specs),
        **{f"mode {m}": any(s["padding_mode"] == m for s in convs)
           for m in ("zeros", "reflect", "replicate", "circular")},
        **{f"padding {p}": any(s["padding"] == p for s in convs) for p in ("same", "valid")},
        "padding pair": any(isinstance(s["padding"], tuple) for s in convs),
        "padding int": any(isinstance(s["padding"], int) for s in convs),
        **{f"rate {r}": any(s["rate"] == r for s in specs) for r in RATES},
        **{f"layout {lay}": any(s["input"]["layout"] == lay for s in specs) for lay in LAYOUTS_4D + LAYOUTS_FC},
    }
    missing = [k for k, v in seen.items() if not v]
    assert not missing, f"the generator never drew {missing} in {len(specs)} specs (seed {RUN_SEED})"
