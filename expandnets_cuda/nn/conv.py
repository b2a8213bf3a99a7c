"""``FusedExpandConv2d``: a drop-in ``nn.Conv2d`` trained in its expanded (CL/CK) form."""
from __future__ import annotations

import torch
from torch import nn

from expandnets_cuda.reference import ConvUnitSpec, build_conv_layers, contraction, pad_input, run_chain
from expandnets_cuda.reference.spec import check_flag
from expandnets_cuda.backends import registry as backends
from expandnets_cuda.nn import chain as chain_unit
from expandnets_cuda.nn.unit import FusedUnit


def _standard_strides(shape) -> tuple:
    """The strides of a freshly allocated contiguous tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


class FusedExpandConv2d(FusedUnit):
    """An ExpandNet convolution unit that computes the unfused chain's exact function and gradients
    at about the compact convolution's cost.

    Takes ``nn.Conv2d``'s arguments, plus:
      strategy: ``"cl"`` (1x1 -> kxk -> 1x1, any kernel, grouped/depthwise too) or ``"ck"``
        (a stack of (k-1)/2 3x3 convs, odd k >= 5, groups=1).
      rate: expansion rate, a number >= 1. Each expanded width is
        ``groups * round_half_up(rate * channels / groups)``, so integer rates are exact.
      nonlinear: ReLU between the sub-layers (the "+Init" counterpart); runs unfused only.
      backend: ``"auto"``, ``"reference"`` (the unfused chain), ``"torch"`` or a
        ``"<composer>+<convolver>"`` pair; see ``expandnets_cuda.available_backends()``.

    The expanded parameters live in ``self.layers`` (plain ``nn.Conv2d`` sub-layers, state_dict
    compatible with ``python_ref.ExpandedConv2d``). ``contract()`` returns the compact ``nn.Conv2d``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", *, strategy="cl", rate=4, nonlinear=False,
                 backend="auto", device=None, dtype=None):
        super().__init__()
        self.spec = ConvUnitSpec.create(in_channels, out_channels, kernel_size, stride, padding,
                                        dilation, groups, bias, padding_mode, strategy, rate)
        self.nonlinear = check_flag(nonlinear, "nonlinear")
        self._init_backend(backend)
        self.layers = build_conv_layers(self.spec, device=device, dtype=dtype)

    # nn.Conv2d's attributes, for code that reads them.
    in_channels = property(lambda self: self.spec.in_channels)
    out_channels = property(lambda self: self.spec.out_channels)
    kernel_size = property(lambda self: self.spec.kernel_size)
    stride = property(lambda self: self.spec.stride)
    padding = property(lambda self: self.spec.padding)
    dilation = property(lambda self: self.spec.dilation)
    groups = property(lambda self: self.spec.groups)
    padding_mode = property(lambda self: self.spec.padding_mode)
    strategy = property(lambda self: self.spec.strategy)
    rate = property(lambda self: self.spec.rate)

    def _check_input(self, x):
        if isinstance(x, torch.Tensor) and x.dim() not in (3, 4):
            raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {tuple(x.shape)}")
        self._check_tensor(x, x.dim() - 3 if isinstance(x, torch.Tensor) else 0,
                           self.spec.in_channels, "channels")
        if 0 in x.shape[-2:] and (x.dim() == 3 or x.shape[0] > 0):
            # as nn.Conv2d (only an empty batch may be empty), for every backend: the unfused
            # chain would otherwise convolve the padding alone
            raise ValueError(f"input has an empty spatial dimension, shape {tuple(x.shape)}; "
                             "only the batch may be empty")
        s = self.spec
        left, right, top, bottom = s.pad
        height, width = x.shape[-2] + top + bottom, x.shape[-1] + left + right
        need_h = s.dilation[0] * (s.kernel_size[0] - 1) + 1
        need_w = s.dilation[1] * (s.kernel_size[1] - 1) + 1
        if height < need_h or width < need_w:
            raise ValueError(f"input spatial size {tuple(x.shape[-2:])} padded to ({height}, {width}) is "
                             f"smaller than the dilated kernel ({need_h}, {need_w})")

    def _compose_with(self, composer, weights, biases):
        if self.spec.strategy == "cl":
            b1, b2, b3 = biases if biases is not None else (None, None, None)
            return composer.cl(weights[0], b1, weights[1], b2, weights[2], b3, self.spec.groups)
        return composer.ck(weights, biases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        impl = self._resolve(x)
        if impl == backends.REFERENCE:
            y = run_chain(pad_input(x, self.spec), self.layers, self.nonlinear)
        else:
            y = self._fused_forward(impl, x)
        return y.squeeze(0) if unbatched else y

    def _fused_forward(self, pair: backends.FusedPair, x: torch.Tensor) -> torch.Tensor:
        if isinstance(pair, backends.ChainRunner):  # the whole chain in fused kernels
            return chain_unit.run_conv_unit(pair, x, self.spec, self.layers, self.nonlinear)
        weight, bias = self._to_compute_dtype(x, *self._composed(pair.composer, x.device.type))
        if weight.stride() != _standard_strides(weight.shape):
            # A composed kernel can be contiguous yet carry other strides on its size-1 dims (a CK
            # kernel with one input channel is a channels-last view). torch's oneDNN convolution
            # (float32, CPU) misreads such a kernel for some strides and output widths: wrong
            # outputs, read from outside the kernel. nn.Conv2d never sees one; give it a plain copy.
            weight = weight.clone(memory_format=torch.contiguous_format)
        padding = self.spec.symmetric_zero_padding
        if padding is None:  # asymmetric or non-zero padding: pad once, explicitly
            x, padding = pad_input(x, self.spec), (0, 0)
        # torch 2.11's Inductor cannot lower a CPU convolution whose bias is a view (the composed
        # bias is a reshape): there the bias is added after, as Inductor itself does on a GPU.
        after = bias is not None and torch.compiler.is_compiling() and x.device.type == "cpu"
        y = pair.convolver.conv2d(x, weight, None if after else bias, self.spec.stride, padding,
                                  self.spec.dilation, self.spec.groups)
        return y + bias.view(1, -1, 1, 1) if after else y

    def contract(self) -> nn.Conv2d:
        """The compact ``nn.Conv2d`` with the same function (composed in float64)."""
        weight, bias = self._contracted_params()
        return contraction.to_conv2d(self.spec, weight, bias, like=self.layers[0].weight)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, stride={s.stride}, "
                f"padding={s.padding}, dilation={s.dilation}, groups={s.groups}, bias={s.bias}, "
                f"strategy={s.strategy!r}, rate={s.rate:g}, nonlinear={self.nonlinear}, backend={self.backend!r}")
