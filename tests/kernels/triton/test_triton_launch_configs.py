"""The Triton wrappers launch only configurations that the sm_90 compile gate declares (and so
compiles): the tile rules, the autotune configs and their pruning, every kernel's launch shape."""
import itertools

import pytest
import torch

pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
import triton  # noqa: E402

from expandnets_cuda.kernels.triton import ck_ops  # noqa: E402
from expandnets_cuda.kernels.triton import cl_ops  # noqa: E402
from expandnets_cuda.kernels.triton import conv_ops  # noqa: E402
from tools import gate_specs  # noqa: E402
from expandnets_cuda.kernels.triton import launch_configs as lc  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ODD_EXTENTS = (1, 2, 3, 5, 9, 15, 16, 17, 31, 33, 63, 65, 100, 127, 129, 300, 1000)
TILE_NAMES = {"BM", "BN", "BK", "BO", "BI", "BC", "BA"}


@pytest.mark.parametrize("kernel", sorted(lc.RULES))
@pytest.mark.parametrize("dtype", lc.FLOAT_DTYPES)
def test_tile_rules_stay_in_the_declared_space(kernel, dtype):
    rule, arity = lc.RULES[kernel]
    declared = set(lc.declared_launches(kernel, dtype))
    for dims in itertools.product(ODD_EXTENTS[::2], repeat=arity):
        assert rule(*dims, dtype) in declared, (kernel, dims)


def test_depthwise_and_conv_channel_rules_stay_in_the_declared_space():
    for c in ODD_EXTENTS:
        assert lc.depthwise_tiles(c) in lc.declared_launches("depthwise_fwd_kernel", torch.float32)
    for kernel, (tile_rule, configs) in lc.TUNED.items():
        for dtype in lc.FLOAT_DTYPES:
            for precision, wide in itertools.product(lc.precisions(dtype), (False, True)):
                kind = lc.dot_kind(dtype, precision)
                declared = set(lc.declared_launches(kernel, dtype, precision, wide))
                kept = [c for c in configs if c.fits(kind, wide)]
                assert kept
                for a, b in itertools.product(ODD_EXTENTS, repeat=2):
                    tiles = tile_rule(a, b, kind)
                    for c in kept:
                        assert lc.Launch.of(c.num_warps, c.num_stages, **tiles, **{c.tile: c.size}) in declared


@pytest.mark.parametrize("kernel", sorted(lc.TUNED))
def test_autotune_prune_keeps_declared_configs(kernel):
    tile_rule, configs = lc.TUNED[kernel]
    prune = lc.prune_for("x", configs)
    full = [c.triton_config() for c in configs]
    for dtype in lc.FLOAT_DTYPES:
        for precision, wide in itertools.product(lc.precisions(dtype), (False, True)):
            declared = set(lc.declared_launches(kernel, dtype, precision, wide))
            for a, b in itertools.product((1, 17, 33, 65, 300), repeat=2):
                tiles = tile_rule(a, b, lc.dot_kind(dtype, precision))
                kept = prune(full, {"x": torch.empty(0, dtype=dtype)}, PRECISION=precision, WIDE=wide, **tiles)
                assert kept
                for tc in kept:
                    launch = lc.Launch.of(tc.num_warps, tc.num_stages, **tiles, **tc.kwargs)
                    assert launch in declared, (kernel, dtype, precision, launch)
                    assert tc.maxnreg == launch.maxnreg


def test_first_autotune_config_fits_every_kind():
    """The interpreter runs only the first config, and pruning falls back to it."""
    for configs in (lc.GEMM_CONFIGS, lc.WGRAD_CONFIGS):
        assert set(configs[0].kinds) == set(configs[0].wide_kinds) == set(lc.ALL_KINDS)


def test_exact_dots_take_the_short_reduction_edge():
    assert lc.conv_fwd_tiles(64, 576, lc.dot_kind(torch.float32, "tf32"))["BK"] == 32
    assert lc.conv_fwd_tiles(64, 576, lc.dot_kind(torch.float32, "ieee"))["BK"] == 16
    assert lc.conv_dgrad_tiles(64, 576, lc.dot_kind(torch.float64, "ieee"))["BK"] == 16
    assert lc.dot_kind(torch.bfloat16, "ieee") == lc.TENSOR_CORE


def test_autotuners_carry_the_declared_configs(monkeypatch):
    from expandnets_cuda.kernels.triton import conv2d
    for kernel, configs in ((conv2d.conv2d_fwd_kernel, lc.GEMM_CONFIGS), (conv2d.conv2d_dgrad_kernel, lc.GEMM_CONFIGS),
                            (conv2d.conv2d_wgrad_kernel, lc.WGRAD_CONFIGS)):
        got = [(c.kwargs, c.num_warps, c.num_stages) for c in kernel.configs]
        want = [(c.triton_config().kwargs, c.num_warps, c.num_stages) for c in configs]
        assert got == want[:len(got)] and got
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert len(lc.tuned(lc.GEMM_CONFIGS)) == len(lc.GEMM_CONFIGS) > 1
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert len(lc.tuned(lc.GEMM_CONFIGS)) == 1


def test_hopper_configs_offer_wgmma_tiles():
    """Pixel tiles of 64 and more with 4 or 8 warps (a warpgroup multiple) exist for every dtype."""
    for dtype in lc.FLOAT_DTYPES:
        launches = lc.declared_launches("conv2d_fwd_kernel", dtype, lc.precisions(dtype)[0])
        assert any(launch["BM"] >= 64 and launch["BN"] == 64 and launch.num_warps % 4 == 0 for launch in launches)


class Recorder:
    """Stands in for each kernel's JIT ``run``: records the launch, runs nothing."""

    def __init__(self, monkeypatch):
        self.launches = []
        for spec in gate_specs.SPECS:
            fn = spec.jit_function
            monkeypatch.setattr(fn, "run", self._record(spec.name, spec.pointers[0], fn.arg_names))

    def _record(self, name, first_pointer, arg_names):
        def run(*args, grid, warmup, **kwargs):
            named = dict(zip(arg_names, args), **kwargs)
            tiles = {k: v for k, v in kwargs.items() if k in TILE_NAMES}
            launch = lc.Launch.of(kwargs["num_warps"], kwargs["num_stages"], **tiles)
            assert kwargs["maxnreg"] == launch.maxnreg, (name, kwargs)
            self.launches.append((name, named[first_pointer].dtype, kwargs.get("PRECISION", "ieee"), kwargs["WIDE"],
                                  launch))
        return run


@pytest.mark.parametrize("force_wide", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_wrappers_launch_only_declared_configs(monkeypatch, dtype, force_wide):
    from expandnets_cuda.kernels.triton import offsets
    if force_wide:
        monkeypatch.setattr(offsets, "WIDE_ELEMENTS", 1)
    recorder = Recorder(monkeypatch)
    for g, a, i, c, o, t in ((1, 6, 3, 10, 5, 9), (2, 70, 33, 40, 129, 1), (1, 17, 64, 100, 64, 4)):
        w1, w2, w3 = torch.empty(g, a, i, dtype=dtype), torch.empty(g, c, a, t, dtype=dtype), torch.empty(g, o, c, dtype=dtype)
        cl_ops.cl_compose(w1, w2, w3)
        cl_ops.cl_compose_backward(torch.empty(g, o, i, t, dtype=dtype), w1, w2, w3)
        cl_ops.cl_bias_fold(w2, w3, torch.empty(g, a, dtype=dtype), torch.empty(g, c, dtype=dtype),
                            torch.empty(g, o, dtype=dtype))
    for later, earlier in (((5, 4, 3, 3), (4, 3, 3, 3)), ((70, 40, 3, 3), (40, 100, 3, 3))):
        L, E = torch.empty(later, dtype=dtype), torch.empty(earlier, dtype=dtype)
        ck_ops.ck_fold(L, E)
        ck_ops.ck_fold_backward(torch.empty(later[0], earlier[1], 5, 5, dtype=dtype), L, E)
    for (n, c, h, w, o, groups), exact in itertools.product(
            ((2, 3, 7, 6, 4, 1), (1, 96, 9, 9, 96, 96), (4, 64, 12, 12, 128, 1), (1, 40, 5, 5, 20, 2)), (True, False)):
        x, wt = torch.empty(n, c, h, w, dtype=dtype), torch.empty(o, c // groups, 3, 3, dtype=dtype)
        conv_ops.conv2d(x, wt, torch.empty(o, dtype=dtype), [1, 1], [1, 1], [1, 1], groups, exact)
        conv_ops.conv2d_backward(torch.empty(n, o, h, w, dtype=dtype), x, wt, True, [1, 1], [1, 1], [1, 1], groups, exact)
    kernels = {name for name, *_ in recorder.launches}
    assert kernels == {spec.name for spec in gate_specs.SPECS}
    assert {wide for _, _, _, wide, _ in recorder.launches} == {force_wide}
    for name, ptr_dtype, precision, wide, launch in recorder.launches:
        assert ptr_dtype == dtype
        assert launch in lc.declared_launches(name, dtype, precision, wide), (name, launch)


@pytest.mark.parametrize("which", ["gemm", "wgrad"])
def test_every_autotune_config_computes_the_convolution(monkeypatch, which):
    """The interpreter runs only the first config of each autotuner: here each one runs in turn
    (forced as the only config), float64 against torch, on a grouped, strided, dilated case."""
    from expandnets_cuda.kernels.triton import conv2d
    tuners = [conv2d.conv2d_fwd_kernel, conv2d.conv2d_dgrad_kernel] if which == "gemm" else [conv2d.conv2d_wgrad_kernel]
    configs = lc.GEMM_CONFIGS if which == "gemm" else lc.WGRAD_CONFIGS
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, device=DEVICE, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    ref = torch.nn.functional.conv2d(x, w, b, (2, 1), (1, 0), (1, 2), 2)
    grad = torch.randn_like(ref)
    want = torch.autograd.grad(ref, [x, w, b], grad)
    for config in configs:
        for tuner in tuners:
            monkeypatch.setattr(tuner, "configs", [config.triton_config()])
        out = conv_ops.conv2d(x, w, b, [2, 1], [1, 0], [1, 2], 2, True)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        for got, exp in zip(torch.autograd.grad(out, [x, w, b], grad), want):
            torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-12, msg=lambda m: f"{config}: {m}")
