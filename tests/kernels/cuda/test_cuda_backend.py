"""The CUDA C++ kernels (``csrc/``, backend ``cuda``) against python_ref and torch, on a GPU.

Every kernel test is marked ``gpu`` (skipped without CUDA) and is also skipped, with the reason,
where the extension ``expandnets_cuda._C`` is not built. The unmarked tests at the end run
anywhere: they check that the backend says why it cannot run instead of failing at import.
Shapes mirror tests/kernels/triton/test_triton_backend.py (dense, grouped, depthwise, non-square taps, rates that
round, FC and CK folds, every gradient) plus cases wider than one tile and split weight gradients.
"""
import subprocess
import sys

import pytest
import torch

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.kernels import cuda as cuda_backend
from expandnets_cuda.backends.registry import BackendUnavailableError
from helpers import CONV_KERNEL_CASES, REL_TOL, assert_rel_close, compare_units, rel_error, twin

REASON = cuda_backend.unavailable_reason()


def kernel_test(fn):
    """A test that runs the CUDA kernels: needs a GPU and the built extension."""
    return pytest.mark.gpu(pytest.mark.skipif(REASON is not None, reason=f"CUDA backend unavailable: {REASON}")(fn))


def _ops():
    """The op modules; importing them loads the extension, so only inside kernel tests."""
    cuda_backend.load_composer()  # raises with the reason if anything is missing
    from expandnets_cuda.kernels.cuda import compose_ops
    from expandnets_cuda.kernels.cuda import conv_ops
    return compose_ops, conv_ops


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@kernel_test
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("groups,a,i,c,o,taps", [
    (1, 6, 3, 10, 5, 9),     # CL 3->5, r=2, 3x3
    (2, 3, 2, 5, 3, 6),      # grouped, odd widths, 3x2 taps
    (4, 2, 1, 2, 1, 9),      # depthwise, r=2
    (1, 40, 3, 20, 17, 1),   # FC-shaped
    (2, 37, 35, 66, 33, 2),  # more than one 32-wide tile along every dimension
])
def test_cl_compose_and_gradients(groups, a, i, c, o, taps, dtype, tol):
    compose_ops, _ = _ops()
    w1 = torch.randn(groups, a, i, dtype=dtype, device="cuda", requires_grad=True)
    w2 = torch.randn(groups, c, a, taps, dtype=dtype, device="cuda", requires_grad=True)
    w3 = torch.randn(groups, o, c, dtype=dtype, device="cuda", requires_grad=True)
    out = compose_ops.cl_compose(w1, w2, w3)
    ref = torch.einsum("goc,gcat,gai->goit", *(t.double() for t in (w3, w2, w1)))
    assert_rel_close(out, ref, tol, "W")
    grad = torch.randn_like(ref)
    for name, got, want in zip(("w1", "w2", "w3"), _grads(out, [w1, w2, w3], grad.to(dtype)),
                               _grads(ref, [w1, w2, w3], grad)):
        assert_rel_close(got, want, tol, f"grad {name}")


@kernel_test
def test_cl_bias_fold_and_gradients():
    compose_ops, _ = _ops()
    dt, g, a, c, o, t = torch.float64, 2, 3, 300, 260, 9  # c and o span more than one 256-wide block
    w2 = torch.randn(g, c, a, t, dtype=dt, device="cuda", requires_grad=True)
    w3 = torch.randn(g, o, c, dtype=dt, device="cuda", requires_grad=True)
    b1, b2, b3 = (torch.randn(g, n, dtype=dt, device="cuda", requires_grad=True) for n in (a, c, o))
    out = compose_ops.cl_bias_fold(w2, w3, b1, b2, b3)
    ref = torch.einsum("goc,gc->go", w3, torch.einsum("gcat,ga->gc", w2, b1) + b2) + b3
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    inputs, grad = [w2, w3, b1, b2, b3], torch.randn_like(ref)
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@kernel_test
@pytest.mark.parametrize("later_shape,earlier_shape", [
    ((5, 4, 3, 3), (4, 3, 3, 3)), ((3, 2, 2, 3), (2, 2, 3, 1)), ((40, 35, 3, 3), (35, 33, 5, 5))])
def test_ck_fold_and_gradients(later_shape, earlier_shape):
    compose_ops, _ = _ops()
    later = torch.randn(later_shape, dtype=torch.float64, device="cuda", requires_grad=True)
    earlier = torch.randn(earlier_shape, dtype=torch.float64, device="cuda", requires_grad=True)
    out = compose_ops.ck_fold(later, earlier)
    ref = pr.compose_two_kernels(later, earlier)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for got, want in zip(_grads(out, [later, earlier], grad), _grads(ref, [later, earlier], grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# The shared small cases plus ones that span several tiles and wgrad splits (no interpreter here).
CONV_CASES = {
    **CONV_KERNEL_CASES,
    "wide_tiles_s3": (1, 70, 5, 6, 80, (2, 3), (3, 2), (1, 1), (1, 1), 1, True, False),
    "wgrad_splits": (2, 3, 34, 33, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, True),
    "depthwise_wgrad_splits": (3, 3, 30, 29, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3, True, False),
}


def _conv_inputs(case, dtype, requires_grad=True):
    N, C, H, W, O, k, s, p, d, g, bias, channels_last = CONV_CASES[case]
    x = torch.randn(N, C, H, W, dtype=torch.float64, device="cuda")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(O, C // g, *k, dtype=torch.float64, device="cuda")
    b = torch.randn(O, dtype=torch.float64, device="cuda") if bias else None
    cast = [t.to(dtype).requires_grad_(requires_grad) if t is not None else None for t in (x, w, b)]
    ref = [t.requires_grad_(requires_grad) if t is not None else None for t in (x, w, b)]
    return cast, ref, (list(s), list(p), list(d), g)


def _check_conv(case, dtype, exact, tol):
    _, conv_ops = _ops()
    (x, w, b), (rx, rw, rb), (s, p, d, g) = _conv_inputs(case, dtype)
    y = conv_ops.conv2d(x, w, b, s, p, d, g, exact)
    ref = torch.nn.functional.conv2d(rx, rw, rb, s, p, d, g)
    assert_rel_close(y, ref, tol, f"{case} {dtype} output")
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last) == CONV_CASES[case][-1] or y.is_contiguous()
    inputs, ref_inputs = [x, w] + ([b] if b is not None else []), [rx, rw] + ([rb] if rb is not None else [])
    grad = torch.randn_like(ref)
    for name, got, want in zip(("x", "w", "b"), _grads(y, inputs, grad.to(dtype)), _grads(ref, ref_inputs, grad)):
        assert_rel_close(got, want, tol, f"{case} {dtype} grad {name}")


@kernel_test
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_kernels_and_gradients_float64(case):
    _check_conv(case, torch.float64, True, 1e-12)


@kernel_test
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_exact_float32(case):
    """The FMA path: float32 without TF32, exact up to summation order."""
    _check_conv(case, torch.float32, True, REL_TOL[torch.float32])


@kernel_test
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-3), (torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_tensor_cores(case, dtype, tol):
    """TF32/bf16/fp16 tensor-core paths, outputs and gradients within their tolerance of float64."""
    _check_conv(case, dtype, False, tol)


@kernel_test
def test_conv2d_non_contiguous_input_float32():
    _, conv_ops = _ops()
    x = torch.randn(2, 3, 6, 10, device="cuda")[..., ::2].requires_grad_(True)
    assert not x.is_contiguous()
    w = torch.randn(4, 3, 3, 3, device="cuda", requires_grad=True)
    y = conv_ops.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, True)
    ref = torch.nn.functional.conv2d(x.double(), w.double(), None, 1, 1)
    assert_rel_close(y, ref, REL_TOL[torch.float32], "output")
    grad = torch.randn_like(ref)
    for got, want in zip(_grads(y, [x, w], grad.float()), _grads(ref, [x, w], grad)):
        assert_rel_close(got, want, REL_TOL[torch.float32], "grad")


@kernel_test
def test_conv2d_weight_gradient_is_deterministic():
    """Split reductions go through partial buffers summed in a fixed order: bitwise repeatable."""
    _, conv_ops = _ops()
    for case in ("wgrad_splits", "depthwise_wgrad_splits"):
        (x, w, b), _, (s, p, d, g) = _conv_inputs(case, torch.float32, requires_grad=False)
        dy = torch.randn_like(conv_ops.conv2d(x, w, b, s, p, d, g, True))
        first = conv_ops.conv2d_backward(dy, x, w, True, s, p, d, g, False)
        second = conv_ops.conv2d_backward(dy, x, w, True, s, p, d, g, False)
        for a, b_ in zip(first, second):
            assert torch.equal(a, b_), case


@kernel_test
def test_conv2d_empty_batch():
    _, conv_ops = _ops()
    x = torch.randn(0, 3, 5, 5, device="cuda")
    w, b = torch.randn(4, 3, 3, 3, device="cuda"), torch.randn(4, device="cuda")
    y = conv_ops.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1, True)
    assert y.shape == (0, 4, 5, 5)
    dx, dw, db = conv_ops.conv2d_backward(torch.randn_like(y), x, w, True, [1, 1], [1, 1], [1, 1], 1, True)
    assert dx.shape == x.shape and not dw.any() and not db.any()


@kernel_test
def test_ops_reject_bad_arguments_clearly():
    compose_ops, conv_ops = _ops()
    w1, w2, w3 = (torch.randn(s, device="cuda") for s in ((1, 2, 3), (1, 4, 2, 9), (1, 2, 4)))
    with pytest.raises(RuntimeError, match="w2 must be"):
        compose_ops.cl_compose(w1, torch.randn(1, 4, 5, 9, device="cuda"), w3)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        compose_ops.cl_compose(w1.half(), w2.half(), w3.half())
    with pytest.raises(RuntimeError, match="contiguous"):
        compose_ops.cl_compose(w1, w2.transpose(1, 2).contiguous().transpose(1, 2), w3)
    x, w = torch.randn(1, 4, 5, 5, device="cuda"), torch.randn(3, 2, 3, 3, device="cuda")
    with pytest.raises(RuntimeError, match="does not fit"):
        conv_ops.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, True)
    with pytest.raises(RuntimeError, match="same|dtype"):
        conv_ops.conv2d(x, torch.randn(3, 4, 3, 3, device="cuda", dtype=torch.float64), None, [1, 1], [1, 1],
                        [1, 1], 1, True)
    with pytest.raises(RuntimeError, match="smaller than the dilated kernel"):
        conv_ops.conv2d(x, torch.randn(3, 4, 7, 7, device="cuda"), None, [1, 1], [0, 0], [1, 1], 1, True)


@kernel_test
@pytest.mark.parametrize("backend,dtype", [("cuda+torch", torch.float64), ("torch+cuda", torch.float64),
                                           ("cuda", torch.float64), ("cuda", torch.float32)])
@pytest.mark.parametrize("kwargs,shape", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, strategy="cl", rate=1.5), (2, 3, 7, 6)),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, strategy="cl", rate=2), (1, 4, 5, 5)),
    (dict(in_channels=2, out_channels=3, kernel_size=5, padding=2, dilation=2, strategy="ck", rate=2), (2, 2, 9, 8)),
    (dict(in_channels=8, out_channels=8, kernel_size=7, padding=3, strategy="ck", rate=2), (2, 8, 8, 8)),
])
def test_fused_unit_with_cuda(kwargs, shape, backend, dtype):
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, dtype=torch.float64, device="cuda",
                     backend=backend)
    x = torch.randn(shape, dtype=torch.float64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(allow_tf32=False):  # exact float32 on both sides
        compare_units(fast.to(dtype), ref, x, REL_TOL[dtype], f"{backend} {kwargs['strategy']} {dtype}")


@kernel_test
@pytest.mark.parametrize("backend", ["cuda+torch", "torch+cuda", "cuda"])
def test_fused_linear_with_cuda(backend):
    fast, ref = twin(ec.FusedExpandLinear, pr.ExpandedLinear, 5, 3, rate=2, dtype=torch.float64, device="cuda",
                     backend=backend)
    x = torch.randn(2, 4, 5, dtype=torch.float64, device="cuda")
    compare_units(fast, ref, x, REL_TOL[torch.float64], f"FC {backend}")


@kernel_test
def test_ops_pass_opcheck():
    """Schemas, fake (meta) implementations, autograd registrations and AOT dispatch are consistent."""
    compose_ops, conv_ops = _ops()
    w1, w2, w3 = (torch.randn(s, device="cuda", requires_grad=True) for s in ((1, 2, 1), (1, 2, 2, 3), (1, 1, 2)))
    torch.library.opcheck(compose_ops.cl_compose, (w1, w2, w3))
    b1, b2, b3 = (torch.randn(1, n, device="cuda", requires_grad=True) for n in (2, 2, 1))
    torch.library.opcheck(compose_ops.cl_bias_fold, (w2, w3, b1, b2, b3))
    later, earlier = (torch.randn(s, device="cuda", requires_grad=True) for s in ((2, 3, 3, 3), (3, 1, 3, 3)))
    torch.library.opcheck(compose_ops.ck_fold, (later, earlier))
    x = torch.randn(1, 2, 5, 5, device="cuda", requires_grad=True)
    w, b = torch.randn(2, 1, 3, 3, device="cuda", requires_grad=True), torch.randn(2, device="cuda", requires_grad=True)
    torch.library.opcheck(conv_ops.conv2d, (x, w, b, [1, 1], [1, 1], [1, 1], 2, True))
    x_cl = torch.randn(1, 4, 6, 5, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w_dense = torch.randn(3, 4, 3, 3, device="cuda", requires_grad=True)
    torch.library.opcheck(conv_ops.conv2d, (x_cl, w_dense, None, [2, 1], [1, 1], [1, 1], 1, True))
    fake_only = ("test_schema", "test_faketensor")
    dy = torch.randn(1, 3, 3, 5, device="cuda")
    torch.library.opcheck(conv_ops.conv2d_backward, (dy, x_cl.detach(), w_dense.detach(), False, [2, 1], [1, 1],
                                                     [1, 1], 1, True), test_utils=fake_only)
    torch.library.opcheck(compose_ops.cl_compose_backward, (torch.randn(1, 1, 1, 3, device="cuda"), w1.detach(),
                                                            w2.detach(), w3.detach()), test_utils=fake_only)
    torch.library.opcheck(compose_ops.ck_fold_backward, (torch.randn(2, 1, 5, 5, device="cuda"), later.detach(),
                                                         earlier.detach()), test_utils=fake_only)


@kernel_test
def test_compile_fullgraph_with_cuda_ops():
    torch._dynamo.reset()
    model = torch.nn.Sequential(
        ec.FusedExpandConv2d(2, 4, 3, padding=1, rate=2, backend="cuda", device="cuda"), torch.nn.ReLU(),
        ec.FusedExpandConv2d(4, 4, 5, stride=2, padding=2, strategy="ck", rate=2, backend="cuda", device="cuda"),
        torch.nn.Flatten(), ec.FusedExpandLinear(4 * 3 * 3, 5, rate=2, backend="cuda", device="cuda"))
    x = torch.randn(2, 2, 5, 5, device="cuda")
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(compiled(x).square().sum(), list(model.parameters()))
    expected = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@kernel_test
@pytest.mark.parametrize("backend", ["cuda", "cuda+torch", "torch+cuda"])
def test_autocast_bf16(backend):
    """Under autocast the CUDA convolution runs in bf16 and the composition stays float32."""
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, 8, 16, 3, padding=1, rate=2, device="cuda",
                     backend=backend)
    x = torch.randn(4, 8, 12, 12, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = fast(x)
        weight, _ = fast.composed_weight()
    assert y.dtype == torch.bfloat16 and weight.dtype == torch.float32
    expected = ref.double()(x.double())
    assert ((y.double() - expected).norm() / expected.norm()).item() < REL_TOL[torch.bfloat16]


@kernel_test
def test_more_than_2_31_elements():
    """64-bit index math: an input of 2^31 + 2^20 elements (fp16, ~4 GiB) convolves correctly."""
    _, conv_ops = _ops()
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip(f"needs ~24 GiB of free GPU memory, {free / 2**30:.1f} GiB free")
    n, side = 2, 32768 + 256  # 2 * 33024^2 = 2^31 + ... elements
    x = torch.randn(n, 1, side, side, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    w = torch.randn(2, 1, 3, 3, device="cuda", dtype=torch.float16)
    y = conv_ops.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, False)
    ref = torch.nn.functional.conv2d(x, w, None, 1, 1)
    # the last rows of the second image lie beyond element 2^31 of both x and y
    assert rel_error(y[1, :, -64:], ref[1, :, -64:]) < 5e-3
    assert rel_error(y[0, :, :64], ref[0, :, :64]) < 5e-3


@kernel_test
def test_every_kernel_once():
    """One small call of every kernel and math path: the selection compute-sanitizer runs
    (scripts/gpu_ci.sh, ``-k every_kernel``)."""
    compose_ops, conv_ops = _ops()
    for dt in (torch.float32, torch.float64):
        w1, w2, w3 = (torch.randn(s, device="cuda", dtype=dt) for s in ((2, 33, 5), (2, 34, 33, 3), (2, 7, 34)))
        compose_ops.cl_compose_backward(compose_ops.cl_compose(w1, w2, w3), w1, w2, w3)
        b1, b2, b3 = (torch.randn(2, n, device="cuda", dtype=dt) for n in (33, 34, 7))
        compose_ops.cl_bias_fold(w2, w3, b1, b2, b3)
        later, earlier = (torch.randn(s, device="cuda", dtype=dt) for s in ((6, 35, 3, 3), (35, 4, 3, 3)))
        compose_ops.ck_fold_backward(compose_ops.ck_fold(later, earlier), later, earlier)
    for dt, exact in ((torch.float64, True), (torch.float32, True), (torch.float32, False), (torch.bfloat16, False),
                      (torch.float16, False)):
        for case in ("grouped_nonsquare_s2_d2", "depthwise_s2", "wgrad_splits", "depthwise_wgrad_splits"):
            (x, w, b), _, (s, p, d, g) = _conv_inputs(case, dt, requires_grad=False)
            y = conv_ops.conv2d(x, w, b, s, p, d, g, exact)
            conv_ops.conv2d_backward(torch.randn_like(y), x, w, b is not None, s, p, d, g, exact)
    torch.cuda.synchronize()


@kernel_test
def test_cuda_backend_on_cpu_tensors_says_why():
    composer = cuda_backend.load_composer()
    w = torch.randn(2, 2, 1, 1)
    with pytest.raises(BackendUnavailableError, match="need CUDA tensors"):
        composer.cl(w, None, torch.randn(2, 2, 3, 3), None, w, None, 1)


# --- anywhere: the backend explains itself instead of failing ----------------------------------

def test_importing_the_backend_never_loads_the_extension():
    code = ("import sys, expandnets_cuda, expandnets_cuda.kernels.cuda as cb; cb.unavailable_reason(); "
            "assert 'expandnets_cuda._C' not in sys.modules; expandnets_cuda.available_backends()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.skipif(REASON is None, reason="the CUDA backend is available here")
def test_loaders_raise_with_the_reason():
    for loader in (cuda_backend.load_composer, cuda_backend.load_convolver):
        with pytest.raises(BackendUnavailableError) as info:
            loader()
        assert str(info.value) == REASON


def test_reason_when_the_extension_is_not_built(monkeypatch):
    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", lambda name: None)
    reason = cuda_backend.unavailable_reason()
    assert "expandnets_cuda._C is not built" in reason
    assert "pip install --no-build-isolation ." in reason and "nvcc" in reason
    with pytest.raises(BackendUnavailableError, match="not built"):
        cuda_backend.load_convolver()


def test_reason_when_torch_has_no_cuda(monkeypatch):
    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in cuda_backend.unavailable_reason()


def test_reason_when_there_is_no_gpu(monkeypatch):
    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in cuda_backend.unavailable_reason()


def test_reason_when_the_gpu_is_too_old(monkeypatch):
    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert "compute capability 8.0" in cuda_backend.unavailable_reason()


@pytest.mark.skipif(REASON is None, reason="the CUDA backend is available here")
def test_registry_reports_cuda_unavailable_with_a_reason():
    info = ec.available_backends()["cuda"]
    assert not info.available and info.reason
    with pytest.raises(BackendUnavailableError):
        ec.FusedExpandConv2d(2, 3, 3, backend="cuda")
