"""The chain-fused kernels (``triton-chain``; ``backend="triton"`` on a nonlinear unit) against
python_ref's unfused chains, nonlinear and linear: outputs and the gradients of the input and of
every sub-layer parameter, in float64. On the CPU they run under the Triton interpreter
(TRITON_INTERPRET=1, set by conftest.py), so shapes are small (grids of a few dozen programs).
"""
import pytest
import torch

import expandnets_cuda as ec
import python_ref as pr
from helpers import REL_TOL, assert_rel_close, compare_units, twin

pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
from expandnets_cuda.kernels.triton import chain_ops  # noqa: E402  (after the interpreter switch)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F64 = torch.float64

# name: (unit kwargs, input shape, channels_last)
CONV_CASES = {
    "cl_3x3_odd_bias": (dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, rate=2), (2, 3, 5, 7), False),
    "cl_stride2_dilated_asym_channels_last_batch1": (
        dict(in_channels=4, out_channels=3, kernel_size=(3, 2), stride=2, padding=(2, 1), dilation=(1, 2), rate=1.5),
        (1, 4, 7, 6), True),
    "cl_grouped_nobias": (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2, bias=False, rate=2),
                          (2, 4, 5, 5), False),
    "cl_depthwise_stride2": (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1, groups=4, rate=3),
                             (2, 4, 7, 7), True),
    "cl_1x1_stride2": (dict(in_channels=3, out_channels=4, kernel_size=1, stride=2, rate=2), (2, 3, 5, 5), False),
    "cl_reflect_same": (dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", padding_mode="reflect",
                             rate=2), (1, 2, 6, 5), False),
    "ck5_stride2_bias": (dict(in_channels=2, out_channels=3, kernel_size=5, stride=2, padding=2, strategy="ck", rate=2),
                         (2, 2, 7, 8), False),
    "ck5_dilated_nobias_channels_last": (
        dict(in_channels=3, out_channels=2, kernel_size=5, padding=3, dilation=2, strategy="ck", bias=False, rate=2),
        (1, 3, 6, 7), True),
    "ck7_fallback_batch1": (dict(in_channels=2, out_channels=3, kernel_size=7, padding=3, strategy="ck", rate=2),
                            (1, 2, 6, 5), False),
    "ck7_replicate_stride2_channels_last": (
        dict(in_channels=2, out_channels=2, kernel_size=7, stride=2, padding=3, padding_mode="replicate",
             strategy="ck", rate=1.5), (2, 2, 5, 6), True),
}


@pytest.mark.parametrize("nonlinear", [True, False], ids=["relu", "linear"])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_unit_matches_reference_float64(case, nonlinear):
    kwargs, shape, channels_last = CONV_CASES[case]
    backend = "triton" if nonlinear else "triton-chain"  # a nonlinear unit's "triton" is its chain
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, nonlinear=nonlinear, dtype=F64,
                     device=DEVICE, backend=backend)
    assert isinstance(fast._resolve(torch.empty(0, device=DEVICE)), ec.backends.ChainRunner)
    x = torch.randn(shape, dtype=F64, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    compare_units(fast, ref, x, REL_TOL[F64], f"{case} nonlinear={nonlinear}")


def test_output_keeps_channels_last_and_reads_non_contiguous_input():
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, 3, 4, 3, padding=1, rate=2, nonlinear=True,
                     dtype=F64, device=DEVICE, backend="triton")
    x = torch.randn(2, 3, 5, 6, dtype=F64, device=DEVICE).contiguous(memory_format=torch.channels_last)
    assert fast(x).is_contiguous(memory_format=torch.channels_last)
    strided = torch.randn(1, 3, 5, 12, dtype=F64, device=DEVICE)[..., ::2]
    assert not strided.is_contiguous()
    compare_units(fast, ref, strided, REL_TOL[F64], "non-contiguous")


@pytest.mark.parametrize("nonlinear", [True, False])
def test_linear_unit_through_the_chain(nonlinear):
    fast, ref = twin(ec.FusedExpandLinear, pr.ExpandedLinear, 5, 3, rate=2, nonlinear=nonlinear, dtype=F64,
                     device=DEVICE, backend="triton" if nonlinear else "triton-chain")
    compare_units(fast, ref, torch.randn(2, 3, 5, dtype=F64, device=DEVICE), REL_TOL[F64], "fc chain")


def test_nonlinear_unit_trains_like_the_reference():
    """A few SGD steps through the chain kernels end at the reference's parameters."""
    kwargs = dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, rate=2, nonlinear=True)
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, dtype=F64, device=DEVICE, backend="triton")
    x = torch.randn(2, 3, 7, 7, dtype=F64, device=DEVICE)
    target = torch.randn(2, 4, 4, 4, dtype=F64, device=DEVICE)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (fast, ref)]
    for _ in range(3):
        for module, opt in zip((fast, ref), optimizers):
            opt.zero_grad()
            torch.nn.functional.mse_loss(module(x), target).backward()
            opt.step()
    start = dict(twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, dtype=F64)[1].named_parameters())
    for (name, a), (_, b) in zip(fast.named_parameters(), ref.named_parameters()):
        assert not torch.equal(b.detach().cpu(), start[name].detach()), f"{name} never moved"
        assert_rel_close(a, b, 1e-10, f"trained {name}")


def _op_args(groups=1, has_l3=True, k1=1, dtype=F64):
    a, c, o, mg = 4, 6, 3, 2
    x = torch.randn(2, groups * mg, 6, 5, dtype=dtype, device=DEVICE, requires_grad=True)
    w1 = torch.randn(groups * a, mg, k1, k1, dtype=dtype, device=DEVICE, requires_grad=True)
    w2 = torch.randn(groups * c, a, 3, 3, dtype=dtype, device=DEVICE, requires_grad=True)
    w3 = torch.randn(groups * o, c, 1, 1, dtype=dtype, device=DEVICE, requires_grad=True) if has_l3 else None
    biases = [torch.randn(groups * n, dtype=dtype, device=DEVICE, requires_grad=True) for n in (a, c, o)]
    return (x, w1, biases[0], w2, biases[1], w3, biases[2] if has_l3 else None,
            [1, 1, 1, 1], [1, 1], [2, 1], [1, 1], groups, True, True)


@pytest.mark.parametrize("case", ["cl_grouped_nobias", "ck5_stride2_bias"])
def test_wide_offsets_path(case, monkeypatch):
    """The 64-bit index path (WIDE, taken for tensors near 2^31 elements) computes the same."""
    from expandnets_cuda.kernels.triton import offsets
    monkeypatch.setattr(offsets, "WIDE_ELEMENTS", 0)  # every launch wide
    kwargs, shape, channels_last = CONV_CASES[case]
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, nonlinear=True, dtype=F64, device=DEVICE,
                     backend="triton")
    compare_units(fast, ref, torch.randn(shape, dtype=F64, device=DEVICE), REL_TOL[F64], f"wide {case}")


def test_backward_is_deterministic():
    args = _op_args(groups=2)
    inputs = [t for t in args[:7] if isinstance(t, torch.Tensor)]
    y = chain_ops.chain(*args)
    grad = torch.randn_like(y)
    first = torch.autograd.grad(y, inputs, grad, retain_graph=True)
    second = torch.autograd.grad(y, inputs, grad)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_saved_for_backward_does_not_grow_with_rate():
    """The chain saves the input and the parameters only; the unfused chain saves r-wide maps."""
    def saved_activation_bytes(module, x):
        params = {p.data_ptr() for p in module.parameters()}
        total = []

        def pack(t):
            if t.data_ptr() not in params and t.data_ptr() != x.data_ptr():
                total.append(t.numel() * t.element_size())
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            module(x).sum()
        return sum(total)

    x = torch.randn(1, 3, 8, 8, dtype=F64, device=DEVICE, requires_grad=True)
    for kernel, strategy in ((3, "cl"), (5, "ck"), (7, "ck")):
        chain_bytes, ref_bytes = [], []
        for rate in (2, 4):
            fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, 3, 3, kernel, padding=kernel // 2, rate=rate,
                             strategy=strategy, nonlinear=True, dtype=F64, device=DEVICE, backend="triton")
            chain_bytes.append(saved_activation_bytes(fast, x))
            ref_bytes.append(saved_activation_bytes(ref, x))
        assert chain_bytes[0] == chain_bytes[1] == 0, (kernel, strategy, chain_bytes)
        assert ref_bytes[1] > ref_bytes[0] > 0  # the comparison can fail: the reference does grow


def test_fake_impls_and_autograd_registration():
    for has_l3, k1 in ((True, 1), (False, 3)):
        torch.library.opcheck(chain_ops.chain, _op_args(has_l3=has_l3, k1=k1),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("kernel,strategy", [(3, "cl"), (7, "ck")])
def test_compile_fullgraph_through_the_chain_op(kernel, strategy):
    torch._dynamo.reset()
    unit = ec.FusedExpandConv2d(3, 4, kernel, padding=kernel // 2, strategy=strategy, rate=2, nonlinear=True,
                                backend="triton", dtype=F64, device=DEVICE)
    x = torch.randn(1, 3, 5, 5, dtype=F64, device=DEVICE)
    compiled = torch.compile(unit, fullgraph=True, backend="aot_eager")
    y, y_eager = compiled(x), unit(x)
    assert_rel_close(y, y_eager, 1e-12, "compiled chain output")
    g = torch.autograd.grad(y.square().sum(), list(unit.parameters()))
    g_eager = torch.autograd.grad(y_eager.square().sum(), list(unit.parameters()))
    for a, b in zip(g, g_eager):
        assert_rel_close(a, b, 1e-12, "compiled chain grad")


def test_backend_names_and_errors():
    unit = ec.FusedExpandConv2d(2, 2, 3, nonlinear=True, backend="triton-chain")
    assert unit.backend == "triton-chain"
    with pytest.raises(ValueError, match="backend"):
        ec.FusedExpandConv2d(2, 2, 3, nonlinear=True, backend="triton+torch")
    with pytest.raises(ValueError, match="chain"):
        chain_ops.chain(*_op_args()[:4], None, *_op_args()[5:])  # b1 without b2


def test_config_rule_covers_every_launch():
    space = chain_ops.config_space()
    assert space and all(min(c.BK, c.BA, c.BC, c.BO) >= 16 for c in space)
    for c in space:
        for edge in (c.BP, c.BK, c.BA, c.BC, c.BO):
            assert edge & (edge - 1) == 0
    assert chain_ops.chain_config(9 * 64, 256, 256, 64, torch.float32) in space


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype,tf32", [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)])
@pytest.mark.parametrize("case", ["cl_3x3_odd_bias", "cl_depthwise_stride2", "ck5_stride2_bias", "ck7_fallback_batch1"])
def test_gpu_dtypes(case, dtype, tf32, backend, monkeypatch):
    if not ec.available_backends()[backend].available:
        pytest.skip(f"{backend}: {ec.available_backends()[backend].reason}")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    kwargs, shape, channels_last = CONV_CASES[case]
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, nonlinear=True, dtype=F64,
                     device="cuda", backend=backend)
    x = torch.randn(shape, dtype=F64, device="cuda")
    tol = {torch.bfloat16: REL_TOL[torch.bfloat16]}.get(dtype, 2e-3 if tf32 else REL_TOL[torch.float32])
    compare_units(fast.to(dtype), ref, x, tol, f"{case} {dtype} tf32={tf32}")


def test_nonlinear_benchmark_rows():
    """bench.nonlinear's rows on a tiny case (interpreter): every mode timed, and the chain saves less."""
    from bench.cases import LayerCase
    from bench.nonlinear import bench_nonlinear_layer
    case = LayerCase("tiny", "conv", 3, 4, (3, 3), (1, 1), (1, 1), 1, True, (3, 5, 5))
    rows = bench_nonlinear_layer(case, "cl", 4, ["triton"], batch=1, device=DEVICE, dtype=F64, min_run_time=0.0,
                                 rounds=1)
    assert [r["impl"] for r in rows] == ["unfused", "chain[triton]"]
    for row in rows:
        assert all(row[f"{mode}_ms"] > 0 for mode in ("fwd", "bwd", "fwd_bwd"))
    assert rows[1]["saved_bytes"] < rows[0]["saved_bytes"]


def test_auto_picks_chain_runners(monkeypatch, tmp_path):
    """``auto``: a nonlinear unit takes the chain runner where one runs (else the unfused chain);
    a linear unit measures the chain runner beside the composed pairs."""
    monkeypatch.setenv("EXPANDNETS_CACHE_DIR", str(tmp_path))
    runner = ec.backends.registry.load_chain("triton-chain")
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=3, padding=1, rate=2, dtype=F64, device=DEVICE)
    x = torch.randn(1, 2, 3, 3, dtype=F64, device=DEVICE)
    monkeypatch.setattr(ec.backends.registry, "chain_candidates", lambda device=None: [])
    assert ec.FusedExpandConv2d(**kwargs, nonlinear=True)._resolve(x) == ec.backends.registry.REFERENCE
    monkeypatch.setattr(ec.backends.registry, "chain_candidates", lambda device=None: [runner])
    assert ec.FusedExpandConv2d(**kwargs, nonlinear=True)._resolve(x) is runner
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, backend="auto")
    chosen = fast._resolve(x)
    times = next(iter(ec.backends.auto.cached_choices().values()))["times_ms"]
    assert set(times) == {"torch", "triton-chain"} and chosen.name == min(times, key=times.get)
    compare_units(fast, ref, x, REL_TOL[F64], "auto")


def test_cuda_chain_says_why_it_cannot_run():
    if ec.available_backends()["cuda"].available:
        pytest.skip("the CUDA extension runs here: test_gpu_dtypes covers it")
    with pytest.raises(ec.BackendUnavailableError):
        ec.FusedExpandConv2d(2, 2, 3, nonlinear=True, backend="cuda")
    with pytest.raises(ec.BackendUnavailableError):
        ec.FusedExpandConv2d(2, 2, 3, backend="cuda-chain")
