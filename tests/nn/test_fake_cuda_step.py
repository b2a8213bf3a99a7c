"""A whole training step (forward, backward, SGD step) of SmallNet k=7 on fake CUDA tensors, with
no GPU: the Triton and the CUDA backends' op glue for CL, CK, FC, the nonlinear counterpart (the
chain kernels) and the network-level work lists.

Checked: the package's ops that run forward and backward (so nothing fell back to torch's
convolution), and that the output and every parameter's gradient have the shape, dtype and
strides the same step gives through torch's own ops (backend ``torch``; the unfused chain for a
nonlinear unit). Needs a CUDA build of torch, and for the CUDA backend the built extension:
CI's GPU-stack step (tools/gpu_stack.sh) has both, and there their absence fails.
"""
import importlib.util

import pytest
import torch

import expandnets_cuda as ec
from expandnets_cuda.models.smallnet import smallnet7
from fake_cuda import DEVICE, backward, fake_cuda, require_cuda_torch, require_extension, to_fake_cuda


def _require(backend: str) -> None:
    require_cuda_torch()
    if backend == "triton" and importlib.util.find_spec("triton") is None:
        pytest.skip("the Triton backend needs `pip install triton`")
    if backend == "cuda":
        require_extension()


# form -> (expand_model's arguments, the package's ops a step runs on each backend)
FORMS = {
    "cl+fc": (dict(strategy="cl", fc=True),
              {"cuda": {"cuda_cl_network", "cuda_cl_network_backward", "cuda_conv2d", "cuda_conv2d_backward"},
               "triton": {"triton_cl_network_compose", "triton_cl_network_compose_backward", "triton_conv2d",
                          "triton_conv2d_backward"}}),
    "ck": (dict(strategy="ck"),
           {"cuda": {"cuda_ck_network_fold", "cuda_ck_network_fold_backward", "cuda_conv2d", "cuda_conv2d_backward"},
            "triton": {"triton_ck_network_fold", "triton_ck_network_fold_backward", "triton_conv2d",
                       "triton_conv2d_backward"}}),
    "nonlinear-cl": (dict(strategy="cl", nonlinear=True),
                     {"cuda": {"cuda_chain", "cuda_chain_backward"},
                      "triton": {"triton_chain", "triton_chain_backward"}}),
    "nonlinear-ck": (dict(strategy="ck", nonlinear=True),  # 3 layers: one chain launch, one convolution
                     {"cuda": {"cuda_chain", "cuda_chain_backward", "cuda_conv2d", "cuda_conv2d_backward"},
                      "triton": {"triton_chain", "triton_chain_backward", "triton_conv2d", "triton_conv2d_backward"}}),
}
CASES = [(form, "float32", "contiguous") for form in FORMS] + [("cl+fc", "float32", "channels_last"),
                                                               ("cl+fc", "bfloat16-autocast", "contiguous")]


def _step(model, backend, dtype, layout):
    """Two SGD steps; -> (output, {name: grad}) of the second step's forward and backward."""
    for module in model.modules():
        if isinstance(module, ec.nn.unit.FusedUnit):
            module.backend = backend
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 3, 16, 16, device=DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    target = torch.zeros(4, dtype=torch.long, device=DEVICE)
    for _ in range(2):
        optimizer.zero_grad()
        with torch.autocast("cuda", torch.bfloat16, enabled=dtype == "bfloat16-autocast"):
            y = model(x)
        backward(torch.nn.functional.cross_entropy(y.float(), target))
        grads = {name: p.grad for name, p in model.named_parameters()}
        optimizer.step()
    return y, grads


def _signature(t: torch.Tensor):
    return tuple(t.shape), t.dtype, t.stride(), t.device


@pytest.mark.parametrize("form,dtype,layout", CASES, ids=["-".join(c) for c in CASES])
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_a_training_step_traces_on_fake_cuda_tensors(backend, form, dtype, layout):
    _require(backend)
    kwargs, ops = FORMS[form]
    expected_ops = ops[backend]
    with torch.device("meta"):  # no values needed, and no random init on a fake GPU
        model = ec.expand_model(smallnet7(input_size=16), rate=2, backend="reference", **kwargs)
        twin = ec.expand_model(smallnet7(input_size=16), rate=2, backend="reference", **kwargs)
    with fake_cuda() as log:
        y, grads = _step(to_fake_cuda(model), backend, dtype, layout)
        ours = log.ours()
        assert "aten::convolution" not in log.calls, "a convolution fell back to torch's"
        log.calls.clear()
        want_y, want_grads = _step(to_fake_cuda(twin), "reference" if kwargs.get("nonlinear") else "torch",
                                   dtype, layout)
    assert expected_ops <= ours, f"did not run: {sorted(expected_ops - ours)} (ran {sorted(ours)})"
    assert y.dtype == (torch.bfloat16 if dtype == "bfloat16-autocast" else torch.float32)
    assert _signature(y) == _signature(want_y)
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        assert grad is not None, f"no gradient for {name}"
        assert _signature(grad) == _signature(want_grads[name]), name
