"""A training step on fake CUDA tensors, on a machine without a GPU: the GPU code path's op glue
(which ops run, with which shapes, dtypes and strides) checked without a device.

It needs a CUDA build of torch (no GPU, no driver): a CPU build aborts on autograd of a CUDA
tensor, fake or not. Three things stand in for the GPU:
- ``FakeTensorMode``: tensors on ``cuda:0`` that carry metadata only; every op runs its fake
  (meta) implementation, the package's custom ops theirs (``register_fake``).
- The package (and autocast; not the rest of torch, which would then call the CUDA runtime)
  sees a GPU of compute capability 9.0, so its backends accept the fake CUDA tensors.
- ``backward()`` runs the autograd graph node by node from Python. The autograd engine cannot:
  on torch 2.11 it asks the CUDA driver about the device's primary context before running
  a CUDA node. Each node still runs its own backward formula, so the backward is traced whole.
"""
from __future__ import annotations

import collections
import contextlib
import importlib.util
import os
import sys
from unittest import mock

import pytest
import torch
from torch import nn
from torch._subclasses import fake_tensor
from torch.utils._python_dispatch import TorchDispatchMode

from expandnets_cuda.backends import auto as autotune
from expandnets_cuda.backends import registry as backends

DEVICE = torch.device("cuda:0")
PACKAGE = "expandnets_cuda"
# What needs a CUDA build of torch (these fakes) or the built extension skips without them; in CI's
# GPU-stack step (tools/gpu_stack.sh) this is set and their absence fails instead.
GPU_STACK = os.environ.get("EXPANDNETS_GPU_STACK") == "1"


def require_cuda_torch() -> None:
    if torch.version.cuda is None:
        if GPU_STACK:
            pytest.fail(f"EXPANDNETS_GPU_STACK=1 but torch {torch.__version__} is a CPU build")
        pytest.skip(f"fake CUDA tensors need a CUDA build of torch (this is {torch.__version__}); "
                    "tools/gpu_stack.sh runs these in one")


def require_extension() -> None:
    if importlib.util.find_spec("expandnets_cuda._C") is None:
        if GPU_STACK:
            pytest.fail("EXPANDNETS_GPU_STACK=1 but expandnets_cuda._C is not built")
        pytest.skip("the CUDA extension is not built here (tools/gpu_stack.sh builds it against a CUDA torch)")


class OpLog(TorchDispatchMode):
    """Counts every op that runs, by its qualified name (``expandnets::cuda_conv2d``, ...)."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func._schema.name] += 1
        return func(*args, **(kwargs or {}))

    def ours(self) -> set:
        return {name.split("::")[1] for name in self.calls if name.startswith("expandnets::")}


@contextlib.contextmanager
def fake_cuda():
    """Fake CUDA tensors and a package that sees a GPU; yields the ``OpLog`` of what runs."""
    fake_tensor.init_gpu_context(DEVICE)  # nothing to initialise without a GPU; cached from now on
    real_is_available = torch.cuda.is_available

    def is_available():  # autocast asks too (torch.cuda.amp.common), before it turns on for "cuda"
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return caller.startswith((PACKAGE, "torch.cuda.amp.common")) or real_is_available()

    # What the registry loads while it believes in the GPU must not outlive that belief.
    caches = (backends._LOADED, autotune._FOUND)
    saved = [dict(cache) for cache in caches]
    try:
        with mock.patch("torch.cuda.is_available", is_available), \
                mock.patch("torch.cuda.get_device_capability", return_value=(9, 0)), \
                mock.patch("torch.cuda.get_device_name", return_value="fake GPU"), \
                mock.patch("torch.cuda.is_bf16_supported", return_value=True), \
                fake_tensor.FakeTensorMode(), OpLog() as log:
            yield log
    finally:
        for cache, before in zip(caches, saved):
            cache.clear()
            cache.update(before)


def to_fake_cuda(model: nn.Module) -> nn.Module:
    """Every parameter and buffer of ``model`` (built on the meta device) as a fake CUDA tensor,
    in place. Call inside ``fake_cuda()``."""
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=DEVICE),
                                                        p.requires_grad)
        for name, b in module._buffers.items():
            if b is not None:
                module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype, device=DEVICE)
    return model


def _reduce_to(grad: torch.Tensor, meta) -> torch.Tensor:
    """What the engine does to a gradient before a node takes it: undo a broadcast, cast."""
    if tuple(grad.shape) != tuple(meta.shape):
        grad = grad.sum_to_size(meta.shape)
    return grad.to(meta.dtype)


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` without the autograd engine: every node of the graph runs once, after
    all the nodes that feed it, and ``AccumulateGrad`` fills the leaves' ``.grad``."""
    root = loss.grad_fn
    waiting = collections.Counter()
    seen, stack = {root}, [root]
    while stack:
        for nxt, _ in stack.pop().next_functions:
            if nxt is not None:
                waiting[nxt] += 1
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
    inputs = {root: [torch.ones_like(loss)]}
    ready = [root]
    while ready:
        node = ready.pop()
        grads = [g if g is not None else torch.zeros(m.shape, dtype=m.dtype, device=m.device)
                 for g, m in zip(inputs.pop(node), node._input_metadata)]
        if hasattr(node, "_forward_cls"):  # an autograd Function: a gradient per forward argument
            outs = node.apply(*grads)
            # The graph's edges are its tensor arguments, those that need a gradient not None, in order.
            needed = iter([g for g, need in zip(outs if isinstance(outs, tuple) else (outs,), node.needs_input_grad)
                           if need])
            outs = [next(needed) if nxt is not None else None for nxt, _ in node.next_functions]
        else:
            outs = node(*grads)
            outs = outs if isinstance(outs, tuple) else (outs,)
        assert len(outs) == len(node.next_functions), (node.name(), len(outs), len(node.next_functions))
        for (nxt, slot), grad in zip(node.next_functions, outs):
            if nxt is None:
                continue
            into = inputs.setdefault(nxt, [None] * len(nxt._input_metadata))
            if grad is not None:
                grad = _reduce_to(grad, nxt._input_metadata[slot])
                into[slot] = grad if into[slot] is None else into[slot] + grad
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)

