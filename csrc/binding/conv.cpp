// The compact convolution ops: forward (bias fused) and backward (input, weight and bias
// gradients), in any memory format the strides describe, on csrc/expandnets/conv.h.
#include <optional>
#include <tuple>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "binding/checks.h"
#include "binding/tensors.h"
#include "expandnets/conv.h"

namespace {

using at::Tensor;
using expandnets::ConvShape;
using namespace expandnets::binding;

ConvShape conv_shape(const char* op, const Tensor& x, const Tensor& w, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_tensor(op, "x", x, x, 4);
  check_weight(op, "weight", w, x, 4);
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              ": stride, padding and dilation need 2 entries each, got ", stride, ", ", padding, ", ", dilation);
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 && padding[0] >= 0 &&
                  padding[1] >= 0,
              op, ": stride and dilation must be >= 1 and padding >= 0, got stride ", stride, ", padding ", padding,
              ", dilation ", dilation);
  TORCH_CHECK(groups >= 1 && groups <= 65535, op, ": groups must be in [1, 65535], got ", groups);
  TORCH_CHECK(x.size(1) % groups == 0 && w.size(0) % groups == 0 && w.size(1) * groups == x.size(1), op,
              ": weight ", w.sizes(), " with groups=", groups, " does not fit an input with ", x.size(1), " channels");
  const int64_t span_h = x.size(2) + 2 * padding[0] - dilation[0] * (w.size(2) - 1) - 1;
  const int64_t span_w = x.size(3) + 2 * padding[1] - dilation[1] * (w.size(3) - 1) - 1;
  TORCH_CHECK(span_h >= 0 && span_w >= 0, op, ": the padded input ", x.sizes(), " (padding ", padding,
              ") is smaller than the dilated kernel ", w.sizes(), " (dilation ", dilation, ")");
  ConvShape s;
  s.batch = x.size(0);
  s.channels = x.size(1);
  s.height = x.size(2);
  s.width = x.size(3);
  s.out_channels = w.size(0);
  s.out_height = span_h / stride[0] + 1;
  s.out_width = span_w / stride[1] + 1;
  s.kernel_h = w.size(2);
  s.kernel_w = w.size(3);
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.groups = groups;
  return s;
}

Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool exact) {
  constexpr const char* op = "expandnets::cuda_conv2d";
  const ConvShape s = conv_shape(op, x, w, stride, padding, dilation, groups);
  if (b.has_value()) {
    check_weight(op, "bias", *b, x, 1);
    check_shape(op, "bias", *b, {s.out_channels});
  }
  Tensor y = empty_like_layout(x, {s.batch, s.out_channels, s.out_height, s.out_width});
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::conv2d_forward<T>(in<T>(x), strides_of(x), in<T>(w), b ? in<T>(*b) : nullptr,
                                                   out<T>(y), strides_of(y), s, !exact, current_stream()));
  });
  return y;
}

// (dx, dweight, dbias); dbias is empty when the convolution has no bias.
std::tuple<Tensor, Tensor, Tensor> conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool has_bias,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, int64_t groups, bool exact) {
  constexpr const char* op = "expandnets::cuda_conv2d_backward";
  const ConvShape s = conv_shape(op, x, w, stride, padding, dilation, groups);
  check_tensor(op, "grad", dy, x, 4);
  check_shape(op, "grad", dy, {s.batch, s.out_channels, s.out_height, s.out_width});
  Tensor dx = empty_like_layout(x, x.sizes());
  Tensor dw = at::empty(w.sizes(), w.options());
  Tensor db = at::empty({has_bias ? s.out_channels : 0}, x.options());
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const cudaStream_t stream = current_stream();
    check_launch(op, expandnets::conv2d_input_grad<T>(in<T>(dy), strides_of(dy), in<T>(w), out<T>(dx), strides_of(dx),
                                                      s, !exact, stream));
    Tensor workspace = at::empty({int64_t(expandnets::conv2d_weight_grad_workspace_bytes<T>(s))},
                                 x.options().dtype(at::kByte));
    check_launch(op, expandnets::conv2d_weight_grad<T>(in<T>(x), strides_of(x), in<T>(dy), strides_of(dy), out<T>(dw),
                                                       has_bias ? out<T>(db) : nullptr, workspace.mutable_data_ptr(),
                                                       s, !exact, stream));
  });
  return {dx, dw, db};
}

}  // namespace

// Fake impls in the named module (see compose.cpp).
TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.kernels.cuda.conv_ops");
  m.def("cuda_conv2d(Tensor x, Tensor w, Tensor? b, int[] stride, int[] padding, int[] dilation, int groups, "
        "bool exact) -> Tensor");
  m.def("cuda_conv2d_backward(Tensor grad, Tensor x, Tensor w, bool has_bias, int[] stride, int[] padding, "
        "int[] dilation, int groups, bool exact) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_conv2d", &conv2d);
  m.impl("cuda_conv2d_backward", &conv2d_backward);
}
