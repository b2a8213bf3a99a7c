"""The Triton composition kernels against python_ref, run for real: on CUDA when there is a GPU,
else on the CPU under the Triton interpreter (TRITON_INTERPRET=1, set by conftest.py).

Shapes are small because the interpreter costs ~0.1 s per program instance; they still cover
dense, grouped, depthwise, non-square taps, rates that round, FC and CK folds, and every gradient.
"""
import pytest
import torch

import expandnets_cuda as ec
import python_ref as pr
from helpers import CONV_KERNEL_CASES, REL_TOL, compare_units, twin

pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
from expandnets_cuda.kernels.triton import ck_ops  # noqa: E402  (after the interpreter switch)
from expandnets_cuda.kernels.triton import cl_ops  # noqa: E402  (after the interpreter switch)
from expandnets_cuda.kernels.triton import conv_ops  # noqa: E402  (after the interpreter switch)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize("groups,a,i,c,o,taps", [
    (1, 6, 3, 10, 5, 9),     # CL 3->5, r=2, 3x3
    (2, 3, 2, 5, 3, 6),      # grouped, odd widths, 3x2 taps
    (4, 2, 1, 2, 1, 9),      # depthwise, r=2
    (1, 40, 3, 20, 17, 1),   # FC-shaped, wider than one 16/32 tile
])
def test_cl_compose_and_gradients(groups, a, i, c, o, taps):
    dt = torch.float64
    w1 = torch.randn(groups, a, i, dtype=dt, device=DEVICE, requires_grad=True)
    w2 = torch.randn(groups, c, a, taps, dtype=dt, device=DEVICE, requires_grad=True)
    w3 = torch.randn(groups, o, c, dtype=dt, device=DEVICE, requires_grad=True)
    out = cl_ops.cl_compose(w1, w2, w3)
    ref = torch.einsum("goc,gcat,gai->goit", w3, w2, w1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for name, got, want in zip(("w1", "w2", "w3"), _grads(out, [w1, w2, w3], grad), _grads(ref, [w1, w2, w3], grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m: f"grad {name}: {m}")


def test_cl_bias_fold_and_gradients():
    dt, g, a, c, o, t = torch.float64, 2, 3, 5, 4, 9
    w2 = torch.randn(g, c, a, t, dtype=dt, device=DEVICE, requires_grad=True)
    w3 = torch.randn(g, o, c, dtype=dt, device=DEVICE, requires_grad=True)
    b1, b2, b3 = (torch.randn(g, n, dtype=dt, device=DEVICE, requires_grad=True) for n in (a, c, o))
    out = cl_ops.cl_bias_fold(w2, w3, b1, b2, b3)
    ref = torch.einsum("goc,gc->go", w3, torch.einsum("gcat,ga->gc", w2, b1) + b2) + b3
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    inputs, grad = [w2, w3, b1, b2, b3], torch.randn_like(ref)
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("later_shape,earlier_shape", [((5, 4, 3, 3), (4, 3, 3, 3)), ((3, 2, 2, 3), (2, 2, 3, 1))])
def test_ck_fold_and_gradients(later_shape, earlier_shape):
    later = torch.randn(later_shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    earlier = torch.randn(earlier_shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out = ck_ops.ck_fold(later, earlier)
    ref = pr.compose_two_kernels(later, earlier)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for got, want in zip(_grads(out, [later, earlier], grad), _grads(ref, [later, earlier], grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


CONV_CASES = CONV_KERNEL_CASES


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_kernels_and_gradients(case):
    N, C, H, W, O, k, s, p, d, g, bias, channels_last = CONV_CASES[case]
    dt = torch.float64
    x = torch.randn(N, C, H, W, dtype=dt, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(O, C // g, *k, dtype=dt, device=DEVICE, requires_grad=True)
    b = torch.randn(O, dtype=dt, device=DEVICE, requires_grad=True) if bias else None
    y = conv_ops.conv2d(x, w, b, list(s), list(p), list(d), g, True)
    ref = torch.nn.functional.conv2d(x, w, b, s, p, d, g)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last or y.is_contiguous()
    inputs, grad = [x, w] + ([b] if bias else []), torch.randn_like(ref)
    for name, got, want in zip(("x", "w", "b"), _grads(y, inputs, grad), _grads(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m: f"{case} grad {name}: {m}")


def test_conv2d_non_contiguous_input_float32():
    x = torch.randn(2, 3, 6, 10, device=DEVICE)[..., ::2].requires_grad_(True)
    assert not x.is_contiguous()
    w = torch.randn(4, 3, 3, 3, device=DEVICE, requires_grad=True)
    y = conv_ops.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, True)
    ref = torch.nn.functional.conv2d(x, w, None, 1, 1)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    for got, want in zip(_grads(y, [x, w], grad), _grads(ref, [x, w], grad)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend,dtype", [("triton+torch", torch.float64), ("triton", torch.float64),
                                           ("triton", torch.float32)])
@pytest.mark.parametrize("kwargs,shape", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, strategy="cl", rate=1.5), (2, 3, 7, 6)),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, strategy="cl", rate=2), (1, 4, 5, 5)),
    (dict(in_channels=2, out_channels=3, kernel_size=5, padding=2, dilation=2, strategy="ck", rate=2), (2, 2, 9, 8)),
])
def test_fused_unit_with_triton(kwargs, shape, backend, dtype):
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, **kwargs, dtype=torch.float64,
                     device=DEVICE, backend=backend)
    x = torch.randn(shape, dtype=torch.float64, device=DEVICE).contiguous(memory_format=torch.channels_last)
    compare_units(fast.to(dtype), ref, x, REL_TOL[dtype], f"{backend} {kwargs['strategy']} {dtype}")


@pytest.mark.parametrize("backend", ["triton+torch", "triton"])
def test_fused_linear_with_triton(backend):
    fast, ref = twin(ec.FusedExpandLinear, pr.ExpandedLinear, 5, 3, rate=2, dtype=torch.float64,
                     device=DEVICE, backend=backend)
    x = torch.randn(2, 4, 5, dtype=torch.float64, device=DEVICE)
    compare_units(fast, ref, x, REL_TOL[torch.float64], f"FC {backend}")


def test_ops_pass_opcheck():
    """Schemas, fake (meta) implementations and autograd registrations are consistent."""
    w1, w2, w3 = (torch.randn(s, device=DEVICE, requires_grad=True) for s in ((1, 2, 1), (1, 2, 2, 1), (1, 1, 2)))
    torch.library.opcheck(cl_ops.cl_compose, (w1, w2, w3), test_utils=("test_schema", "test_faketensor"))
    later, earlier = torch.randn(1, 1, 3, 3, device=DEVICE), torch.randn(1, 1, 1, 1, device=DEVICE)
    torch.library.opcheck(ck_ops.ck_fold, (later, earlier), test_utils=("test_schema", "test_faketensor"))
    x, w, b = torch.randn(1, 2, 3, 3, device=DEVICE), torch.randn(2, 1, 3, 3, device=DEVICE), torch.randn(2, device=DEVICE)
    torch.library.opcheck(conv_ops.conv2d, (x, w, b, [1, 1], [1, 1], [1, 1], 2, True),
                          test_utils=("test_schema", "test_faketensor"))


def test_compile_fullgraph_with_triton_ops():
    torch._dynamo.reset()
    unit = ec.FusedExpandConv2d(2, 3, 3, padding=1, rate=2, backend="triton", device=DEVICE)
    x = torch.randn(1, 2, 5, 5, device=DEVICE)
    compiled = torch.compile(unit, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), unit(x), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(compiled(x).sum(), list(unit.parameters()))
    expected = torch.autograd.grad(unit(x).sum(), list(unit.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    from expandnets_cuda.kernels.triton import load_composer
    composer = load_composer()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    unit = ec.FusedExpandConv2d(2, 3, 3, rate=2, backend="triton")
    with pytest.raises(ec.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        unit(torch.randn(1, 2, 5, 5))
    with pytest.raises(ec.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        composer.cl(unit.layers[0].weight, None, unit.layers[1].weight, None,
                            unit.layers[2].weight, None, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_kernels_half_and_tf32_on_cuda(case, dtype):
    """On a GPU: TF32/bf16/fp16 tensor-core paths within their tolerance of a float64 reference."""
    N, C, H, W, O, k, s, p, d, g, bias, channels_last = CONV_CASES[case]
    x = torch.randn(N, C, H, W, device="cuda", dtype=torch.float64)
    w = torch.randn(O, C // g, *k, device="cuda", dtype=torch.float64)
    b = torch.randn(O, device="cuda", dtype=torch.float64) if bias else None
    y = conv_ops.conv2d(x.to(dtype), w.to(dtype), b.to(dtype) if bias else None, list(s), list(p), list(d), g, False)
    ref = torch.nn.functional.conv2d(x, w, b, s, p, d, g)
    tol = {torch.float32: 2e-3, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    assert ((y.double() - ref).norm() / ref.norm()).item() < tol


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "triton+torch", "torch+triton"])
def test_autocast_bf16_on_cuda(backend):
    """Under autocast the Triton convolution runs in bf16 and the composition stays float32."""
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, 8, 16, 3, padding=1, rate=2, device="cuda",
                     backend=backend)
    x = torch.randn(4, 8, 12, 12, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = fast(x)
        weight, _ = fast.composed_weight()
    assert y.dtype == torch.bfloat16 and weight.dtype == torch.float32
    expected = ref.double()(x.double())
    assert ((y.double() - expected).norm() / expected.norm()).item() < REL_TOL[torch.bfloat16]
