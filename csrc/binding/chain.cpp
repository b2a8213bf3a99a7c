// The chain-fused unit ops: an expanded unit's layers (layer1 -> act -> layer2 [-> act -> 1x1])
// forward in one launch, and their gradients, on csrc/expandnets/chain.h.
#include <optional>
#include <tuple>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "binding/checks.h"
#include "binding/tensors.h"
#include "expandnets/chain.h"

namespace {

using at::Tensor;
using namespace expandnets::binding;

// x (N, G*mg, H, W); w1 (G*a, mg, k1h, k1w); w2 (G*c, a, kh, kw); w3 (G*o, c, 1, 1) or none; biases
// all or none; pads (left, right, top, bottom) zero padding of the unit's input.
expandnets::ChainShape chain_shape(const char* op, const Tensor& x, const Tensor& w1, const std::optional<Tensor>& b1,
                                   const Tensor& w2, const std::optional<Tensor>& b2, const std::optional<Tensor>& w3,
                                   const std::optional<Tensor>& b3, at::IntArrayRef pads, at::IntArrayRef dilation1,
                                   at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups, bool relu) {
  check_tensor(op, "x", x, x, 4);
  check_weight(op, "w1", w1, x, 4);
  check_weight(op, "w2", w2, x, 4);
  TORCH_CHECK(pads.size() == 4 && dilation1.size() == 2 && stride.size() == 2 && dilation.size() == 2, op,
              ": pads needs 4 entries (left, right, top, bottom), dilation1, stride and dilation 2 each");
  TORCH_CHECK(pads[0] >= 0 && pads[1] >= 0 && pads[2] >= 0 && pads[3] >= 0 && stride[0] >= 1 && stride[1] >= 1 &&
                  dilation[0] >= 1 && dilation[1] >= 1 && dilation1[0] >= 1 && dilation1[1] >= 1,
              op, ": pads must be >= 0, strides and dilations >= 1");
  TORCH_CHECK(groups >= 1 && groups <= 65535, op, ": groups must be in [1, 65535], got ", groups);
  TORCH_CHECK(b1.has_value() == b2.has_value() && (!w3.has_value() || b1.has_value() == b3.has_value()), op,
              ": the biases must be all given or all absent");
  expandnets::ChainShape s{};
  s.batch = x.size(0);
  s.groups = groups;
  s.mg = w1.size(1);
  TORCH_CHECK(w1.size(0) % groups == 0 && w2.size(0) % groups == 0 && s.mg * groups == x.size(1), op, ": w1 ",
              w1.sizes(), " with groups=", groups, " does not fit an input with ", x.size(1), " channels");
  s.a = w1.size(0) / groups;
  s.c = w2.size(0) / groups;
  TORCH_CHECK(w2.size(1) == s.a, op, ": w2 ", w2.sizes(), " must take ", s.a, " channels per group (w1 ", w1.sizes(),
              ")");
  s.o = 0;
  if (w3.has_value()) {
    check_weight(op, "w3", *w3, x, 4);
    TORCH_CHECK(w3->size(0) % groups == 0 && w3->size(1) == s.c && w3->size(2) == 1 && w3->size(3) == 1, op,
                ": w3 must be (groups*o, ", s.c, ", 1, 1), got ", w3->sizes());
    s.o = w3->size(0) / groups;
  }
  s.k1h = w1.size(2);
  s.k1w = w1.size(3);
  TORCH_CHECK(s.k1h * s.k1w == 1 || groups == 1, op, ": a KxK first layer needs groups=1");
  s.height = x.size(2);
  s.width = x.size(3);
  s.pad_left = pads[0];
  s.pad_top = pads[2];
  s.d1h = dilation1[0];
  s.d1w = dilation1[1];
  s.kh = w2.size(2);
  s.kw = w2.size(3);
  s.sh = stride[0];
  s.sw = stride[1];
  s.dh = dilation[0];
  s.dw = dilation[1];
  s.h1 = s.height + pads[2] + pads[3] - s.d1h * (s.k1h - 1);
  s.w1 = s.width + pads[0] + pads[1] - s.d1w * (s.k1w - 1);
  const int64_t span_h = s.h1 - s.dh * (s.kh - 1) - 1, span_w = s.w1 - s.dw * (s.kw - 1) - 1;
  TORCH_CHECK(s.h1 >= 1 && s.w1 >= 1 && span_h >= 0 && span_w >= 0, op, ": the padded input ", x.sizes(), " (pads ",
              pads, ") is smaller than the unit's receptive field");
  s.out_h = span_h / s.sh + 1;
  s.out_w = span_w / s.sw + 1;
  const auto check_bias = [&](const char* name, const std::optional<Tensor>& b, int64_t n) {
    if (!b.has_value()) return;
    check_weight(op, name, *b, x, 1);
    check_shape(op, name, *b, {groups * n});
  };
  check_bias("b1", b1, s.a);
  check_bias("b2", b2, s.c);
  if (w3.has_value()) check_bias("b3", b3, s.o);
  s.has_bias = b1.has_value();
  s.relu = relu;
  return s;
}

// `exact` is accepted for the Triton op's signature; the chain kernels always run plain FMA.
Tensor chain(const Tensor& x, const Tensor& w1, const std::optional<Tensor>& b1, const Tensor& w2,
             const std::optional<Tensor>& b2, const std::optional<Tensor>& w3, const std::optional<Tensor>& b3,
             at::IntArrayRef pads, at::IntArrayRef dilation1, at::IntArrayRef stride, at::IntArrayRef dilation,
             int64_t groups, bool relu, bool /*exact*/) {
  constexpr const char* op = "expandnets::cuda_chain";
  const expandnets::ChainShape s = chain_shape(op, x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation,
                                               groups, relu);
  Tensor y = empty_like_layout(x, {s.batch, groups * (s.o > 0 ? s.o : s.c), s.out_h, s.out_w});
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::chain_forward<T>(in<T>(x), strides_of(x), in<T>(w1), in_or_null<T>(b1), in<T>(w2),
                                                  in_or_null<T>(b2), in_or_null<T>(w3), in_or_null<T>(b3), out<T>(y),
                                                  strides_of(y), s, current_stream()));
  });
  return y;
}

// (dx, dw1, db1, dw2, db2, dw3, db3); the gradients of absent tensors are empty.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> chain_backward(
    const Tensor& dy, const Tensor& x, const Tensor& w1, const std::optional<Tensor>& b1, const Tensor& w2,
    const std::optional<Tensor>& b2, const std::optional<Tensor>& w3, const std::optional<Tensor>& b3,
    at::IntArrayRef pads, at::IntArrayRef dilation1, at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
    bool relu, bool /*exact*/) {
  constexpr const char* op = "expandnets::cuda_chain_backward";
  const expandnets::ChainShape s = chain_shape(op, x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation,
                                               groups, relu);
  check_tensor(op, "grad", dy, x, 4);
  check_shape(op, "grad", dy, {s.batch, groups * (s.o > 0 ? s.o : s.c), s.out_h, s.out_w});
  const auto like = [&](const std::optional<Tensor>& t) {
    return t.has_value() ? at::empty(t->sizes(), t->options()) : at::empty({0}, x.options());
  };
  Tensor dx = empty_like_layout(x, x.sizes());
  Tensor dw1 = at::empty(w1.sizes(), w1.options()), dw2 = at::empty(w2.sizes(), w2.options());
  Tensor db1 = like(b1), db2 = like(b2), dw3 = like(w3), db3 = like(w3.has_value() ? b3 : std::nullopt);
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor workspace = at::empty({int64_t(expandnets::chain_backward_workspace_bytes<T>(s))},
                                 x.options().dtype(at::kByte));
    const auto maybe = [&](Tensor& t, bool present) { return present ? out<T>(t) : static_cast<T*>(nullptr); };
    check_launch(op, expandnets::chain_backward<T>(
                         in<T>(dy), strides_of(dy), in<T>(x), strides_of(x), in<T>(w1), in_or_null<T>(b1), in<T>(w2),
                         in_or_null<T>(b2), in_or_null<T>(w3), out<T>(dx), strides_of(dx), out<T>(dw1),
                         maybe(db1, s.has_bias), out<T>(dw2), maybe(db2, s.has_bias), maybe(dw3, s.o > 0),
                         maybe(db3, s.has_bias && s.o > 0), workspace.mutable_data_ptr(), s, current_stream()));
  });
  return {dx, dw1, db1, dw2, db2, dw3, db3};
}

}  // namespace

// Fake impls in the named module (see compose.cpp).
TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.kernels.cuda.chain_ops");
  m.def("cuda_chain(Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, Tensor? w3, Tensor? b3, int[] pads, "
        "int[] dilation1, int[] stride, int[] dilation, int groups, bool relu, bool exact) -> Tensor");
  m.def("cuda_chain_backward(Tensor grad, Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, Tensor? w3, "
        "Tensor? b3, int[] pads, int[] dilation1, int[] stride, int[] dilation, int groups, bool relu, bool exact) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_chain", &chain);
  m.impl("cuda_chain_backward", &chain_backward);
}
