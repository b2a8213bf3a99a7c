"""What a user would pick instead of this library, measured beside it.

1. **Online collapse in plain PyTorch** (OREPA-style re-parameterisation): every forward composes
   the effective weight from the expanded parameters with two matrix products in the cheaper order
   (CL, FC) or by convolving the kernels (CK), runs one ``F.conv2d`` (which pads, as a user would
   let it) / ``F.linear``, and lets autograd do the rest. About twenty lines; no custom kernels.
2. **``torch.compile`` of that online collapse** (``collapse-compile``).
3. **``torch.compile`` of the unfused chain**: the paper's training form, handed to Inductor.

Both are built from an unfused model (``backend="reference"``) and share its parameters, so they
compute the same function and gradients as the fused model they are compared with.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from expandnets_cuda import FusedExpandConv2d, FusedExpandLinear

PEERS = ("collapse", "collapse-compile", "compile")
COMPILED_PEERS = ("collapse-compile", "compile")  # timed only at the compile rates (cold compiles)


def _conv(x: torch.Tensor, w: torch.Tensor, b, spec) -> torch.Tensor:
    """One convolution with the spec's padding: ``F.conv2d`` pads symmetric zero padding itself;
    other modes (and asymmetric 'same') are padded explicitly, as ``nn.Conv2d`` does."""
    padding = spec.symmetric_zero_padding
    if padding is None:
        mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
        x, padding = F.pad(x, spec.pad, mode=mode), 0
    return F.conv2d(x, w, b, spec.stride, padding, spec.dilation, spec.groups)


def collapse_cl(layers, groups: int):
    """W3 W2 W1 per group and tap, as two batched matrix products in the cheaper order."""
    w1, w2, w3 = (layer.weight for layer in layers)
    g = groups
    a, i = w1.shape[0] // g, w1.shape[1]
    c, o, taps = w2.shape[0] // g, w3.shape[0] // g, w2.shape[2:]
    W1 = w1.reshape(g, a, i)
    W2 = w2.reshape(g, c, a, -1)
    W3 = w3.reshape(g, o, c)
    if o * c * a + o * a * i <= c * a * i + o * c * i:  # (W3 W2) W1, else W3 (W2 W1); times taps both
        weight = torch.einsum("goat,gai->goit", torch.einsum("goc,gcat->goat", W3, W2), W1)
    else:
        weight = torch.einsum("goc,gcit->goit", W3, torch.einsum("gcat,gai->gcit", W2, W1))
    weight = weight.reshape(g * o, i, *taps)
    if layers[0].bias is None:
        return weight, None
    inner = torch.einsum("gcat,ga->gc", W2, layers[0].bias.reshape(g, -1)) + layers[1].bias.reshape(g, -1)
    return weight, torch.einsum("goc,gc->go", W3, inner).reshape(-1) + layers[2].bias


def fold(later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """The kernel of two stacked convs, their full convolution: a conv of the earlier kernel (as a
    batch over its input channels) with the flipped later one."""
    return F.conv2d(earlier.transpose(0, 1), later.flip(-1, -2), padding=later.shape[-1] - 1).transpose(0, 1)


def collapse_ck(layers):
    """Fold the 3x3 stack left to right (``fold``), the biases with each later kernel's tap sums."""
    weight, bias = layers[0].weight, layers[0].bias
    for layer in layers[1:]:
        later = layer.weight
        weight = fold(later, weight)
        if bias is not None:
            bias = later.sum(dim=(2, 3)) @ bias + layer.bias
    return weight, bias


def collapse_fc(layers):
    w1, w2, w3 = (layer.weight for layer in layers)
    (o, c), (a, i) = w3.shape, w1.shape
    weight = (w3 @ w2) @ w1 if o * c * a + o * a * i <= c * a * i + o * c * i else w3 @ (w2 @ w1)
    if layers[0].bias is None:
        return weight, None
    return weight, w3 @ (w2 @ layers[0].bias + layers[1].bias) + layers[2].bias


class OnlineCollapseConv2d(nn.Module):
    def __init__(self, unit: FusedExpandConv2d):
        super().__init__()
        self.spec, self.layers = unit.spec, unit.layers  # shared parameters

    def forward(self, x):
        s = self.spec
        w, b = collapse_cl(self.layers, s.groups) if s.strategy == "cl" else collapse_ck(self.layers)
        return _conv(x, w, b, s)


class OnlineCollapseLinear(nn.Module):
    def __init__(self, unit: FusedExpandLinear):
        super().__init__()
        self.layers = unit.layers

    def forward(self, x):
        return F.linear(x, *collapse_fc(self.layers))


def online_collapse(unfused: nn.Module) -> nn.Module:
    """The model with every expanded unit replaced by its online collapse (parameters shared)."""
    model = copy.copy(unfused)
    model._modules = dict(unfused._modules)
    for name, child in unfused.named_children():
        if isinstance(child, FusedExpandConv2d) and not child.nonlinear:
            model._modules[name] = OnlineCollapseConv2d(child)
        elif isinstance(child, FusedExpandLinear) and not child.nonlinear:
            model._modules[name] = OnlineCollapseLinear(child)
        else:
            model._modules[name] = online_collapse(child)
    return model


# Every compiled variant of one model class shares its forward's code object, and Dynamo keeps at
# most ``recompile_limit`` (8) graphs per code object: past it, it silently runs the module eagerly,
# so a benchmark with more compiled variants would time eager code under a compiled name.
COMPILED_GRAPHS_PER_CODE = 64


def compile_module(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model)`` with room for one graph per compiled variant, and an error (not a
    silent eager fallback) should that run out."""
    import torch._dynamo.config as dynamo_config
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILED_GRAPHS_PER_CODE)
    dynamo_config.fail_on_recompile_limit_hit = True
    return torch.compile(model, backend=backend)


def compiled(unfused: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` of the unfused chain (compiles at its first call: warm it up first)."""
    return compile_module(unfused, backend)


def build_peer(peer: str, unfused: nn.Module, compile_backend: str = "inductor") -> nn.Module:
    if peer == "collapse":
        return online_collapse(unfused)
    if peer == "collapse-compile":
        return compile_module(online_collapse(unfused), compile_backend)
    if peer == "compile":
        return compiled(unfused, compile_backend)
    raise ValueError(f"peer must be one of {PEERS}, got {peer!r}")
