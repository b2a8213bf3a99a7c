"""64-bit offsets: the wrappers switch a launch to int64 index arithmetic (``WIDE``) exactly when a
tensor it addresses spans 2**30 elements or more, and the wide kernels compute the same results.
(That a wide kernel really does every product in int64 is checked on its compiled TTIR, by the
sm_90 gate and by tests/tools/test_triton_sm90_gate.py.)"""
import pytest
import torch

import python_ref as pr
from helpers import record_launches

pytest.importorskip("triton", reason="the Triton backend needs `pip install triton`")
from expandnets_cuda.kernels.triton import ck_ops  # noqa: E402
from expandnets_cuda.kernels.triton import cl_ops  # noqa: E402
from expandnets_cuda.kernels.triton import conv_ops  # noqa: E402
from tools import gate_specs  # noqa: E402
from expandnets_cuda.kernels.triton import offsets  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_extent_follows_strides_not_numel():
    big = torch.empty(offsets.WIDE_ELEMENTS, device="meta")
    assert offsets.needs_wide_offsets(big)
    assert not offsets.needs_wide_offsets(big[:-1])
    assert not offsets.needs_wide_offsets(torch.empty(1, device="meta").expand(1 << 32))  # stride 0
    strided = torch.empty(1 << 31, device="meta")[:: 1 << 20]  # 2048 elements far apart
    assert strided.numel() == 2048 and offsets.needs_wide_offsets(strided)
    channels_last = torch.empty(1, 1 << 15, 1 << 8, 1 << 7, device="meta").contiguous(memory_format=torch.channels_last)
    assert offsets.tensor_extent(channels_last) == channels_last.numel() == 1 << 30
    assert not offsets.needs_wide_offsets(None, torch.empty(0), torch.empty(3, 4))


@pytest.fixture
def every_launch_wide(monkeypatch):
    """Every launch takes the 64-bit path, and the test sees that each one did."""
    monkeypatch.setattr(offsets, "WIDE_ELEMENTS", 1)
    return record_launches(monkeypatch, gate_specs.SPECS)


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


def _check(out, ref, inputs):
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_wide_composition_kernels_match_reference(every_launch_wide):
    dt = dict(dtype=torch.float64, device=DEVICE, requires_grad=True)
    g, a, i, c, o, t = 2, 3, 2, 5, 3, 4
    w1, w2, w3 = torch.randn(g, a, i, **dt), torch.randn(g, c, a, t, **dt), torch.randn(g, o, c, **dt)
    _check(cl_ops.cl_compose(w1, w2, w3), torch.einsum("goc,gcat,gai->goit", w3, w2, w1), [w1, w2, w3])
    b1, b2, b3 = (torch.randn(g, n, **dt) for n in (a, c, o))
    ref = torch.einsum("goc,gc->go", w3, torch.einsum("gcat,ga->gc", w2, b1) + b2) + b3
    _check(cl_ops.cl_bias_fold(w2, w3, b1, b2, b3), ref, [w2, w3, b1, b2, b3])
    later, earlier = torch.randn(3, 2, 3, 2, **dt), torch.randn(2, 3, 2, 3, **dt)
    _check(ck_ops.ck_fold(later, earlier), pr.compose_two_kernels(later, earlier), [later, earlier])
    names = {name for name, _ in every_launch_wide}
    assert all(wide for _, wide in every_launch_wide)
    assert {s.name for s in gate_specs.SPECS if s.name.startswith(("cl_", "ck_"))} <= names


@pytest.mark.parametrize("groups,channels_last", [(1, True), (2, False), (4, True)])
def test_wide_convolution_kernels_match_reference(every_launch_wide, groups, channels_last):
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, device=DEVICE)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out = conv_ops.conv2d(x, w, b, [2, 1], [1, 1], [1, 1], groups, True)
    _check(out, torch.nn.functional.conv2d(x, w, b, (2, 1), 1, 1, groups), [x, w, b])
    assert every_launch_wide and all(wide for _, wide in every_launch_wide)
