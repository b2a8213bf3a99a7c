// The per-unit composition ops: CL/FC W3 @ W2[tap] @ W1 (and its gradients), the CL bias fold and
// the CK fold (and its gradients), on csrc/expandnets/compose.h.
#include <tuple>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "binding/checks.h"
#include "binding/tensors.h"
#include "expandnets/compose.h"

namespace {

using at::Tensor;
using expandnets::CkShape;
using expandnets::ClShape;
using namespace expandnets::binding;

Tensor cl_compose(const Tensor& w1, const Tensor& w2, const Tensor& w3) {
  constexpr const char* op = "expandnets::cuda_cl_compose";
  const ClShape s = cl_shape(op, w1, w2, w3);
  Tensor w = at::empty({s.groups, s.o, s.i, s.taps}, w2.options());
  const c10::cuda::CUDAGuard guard(w2.device());
  dispatch_compose(op, w2, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op,
                 expandnets::cl_compose_forward<T>(in<T>(w1), in<T>(w2), in<T>(w3), out<T>(w), s, current_stream()));
  });
  return w;
}

std::tuple<Tensor, Tensor, Tensor> cl_compose_backward(const Tensor& grad, const Tensor& w1, const Tensor& w2,
                                                       const Tensor& w3) {
  constexpr const char* op = "expandnets::cuda_cl_compose_backward";
  const ClShape s = cl_shape(op, w1, w2, w3);
  check_weight(op, "grad", grad, w2, 4);
  check_shape(op, "grad", grad, {s.groups, s.o, s.i, s.taps});
  Tensor dw1 = at::empty(w1.sizes(), w1.options()), dw2 = at::empty(w2.sizes(), w2.options());
  Tensor dw3 = at::empty(w3.sizes(), w3.options());
  const c10::cuda::CUDAGuard guard(w2.device());
  dispatch_compose(op, w2, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::cl_compose_backward<T>(in<T>(grad), in<T>(w1), in<T>(w2), in<T>(w3), out<T>(dw1),
                                                        out<T>(dw2), out<T>(dw3), s, current_stream()));
  });
  return {dw1, dw2, dw3};
}

// w2 (G, C, A, T), w3 (G, O, C), b1 (G, A), b2 (G, C), b3 (G, O) -> (G, O).
Tensor cl_bias_fold(const Tensor& w2, const Tensor& w3, const Tensor& b1, const Tensor& b2, const Tensor& b3) {
  constexpr const char* op = "expandnets::cuda_cl_bias_fold";
  check_weight(op, "w2", w2, w2, 4);
  check_weight(op, "w3", w3, w2, 3);
  const int64_t groups = w2.size(0), c = w2.size(1), a = w2.size(2), taps = w2.size(3), o = w3.size(1);
  check_shape(op, "w3", w3, {groups, o, c});
  const auto check_bias = [&](const char* name, const Tensor& b, int64_t n) {
    check_weight(op, name, b, w2, 2);
    check_shape(op, name, b, {groups, n});
  };
  check_bias("b1", b1, a);
  check_bias("b2", b2, c);
  check_bias("b3", b3, o);
  Tensor bias = at::empty({groups, o}, w2.options());
  const ClShape s{groups, a, 0, c, o, taps};
  const c10::cuda::CUDAGuard guard(w2.device());
  dispatch_compose(op, w2, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::cl_bias_fold<T>(in<T>(w2), in<T>(w3), in<T>(b1), in<T>(b2), in<T>(b3), out<T>(bias),
                                                 s, current_stream()));
  });
  return bias;
}

Tensor ck_fold(const Tensor& later, const Tensor& earlier) {
  constexpr const char* op = "expandnets::cuda_ck_fold";
  const CkShape s = ck_shape(op, later, earlier);
  Tensor kernel = at::empty({s.o, s.i, s.a + s.b - 1, s.a2 + s.b2 - 1}, later.options());
  const c10::cuda::CUDAGuard guard(later.device());
  dispatch_compose(op, later, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::ck_fold_forward<T>(in<T>(later), in<T>(earlier), out<T>(kernel), s, current_stream()));
  });
  return kernel;
}

std::tuple<Tensor, Tensor> ck_fold_backward(const Tensor& grad, const Tensor& later, const Tensor& earlier) {
  constexpr const char* op = "expandnets::cuda_ck_fold_backward";
  const CkShape s = ck_shape(op, later, earlier);
  check_weight(op, "grad", grad, later, 4);
  check_shape(op, "grad", grad, {s.o, s.i, s.a + s.b - 1, s.a2 + s.b2 - 1});
  Tensor d_later = at::empty(later.sizes(), later.options()), d_earlier = at::empty(earlier.sizes(), earlier.options());
  const c10::cuda::CUDAGuard guard(later.device());
  dispatch_compose(op, later, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::ck_fold_backward<T>(in<T>(grad), in<T>(later), in<T>(earlier), out<T>(d_later),
                                                     out<T>(d_earlier), s, current_stream()));
  });
  return {d_later, d_earlier};
}

}  // namespace

// A fragment: the Triton backend defines its ops in the same namespace from Python. It names the
// Python module holding these ops' fake impls, which torch imports when it needs them.
TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.kernels.cuda.compose_ops");
  m.def("cuda_cl_compose(Tensor w1, Tensor w2, Tensor w3) -> Tensor");
  m.def("cuda_cl_compose_backward(Tensor grad, Tensor w1, Tensor w2, Tensor w3) -> (Tensor, Tensor, Tensor)");
  m.def("cuda_cl_bias_fold(Tensor w2, Tensor w3, Tensor b1, Tensor b2, Tensor b3) -> Tensor");
  m.def("cuda_ck_fold(Tensor later, Tensor earlier) -> Tensor");
  m.def("cuda_ck_fold_backward(Tensor grad, Tensor later, Tensor earlier) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_cl_compose", &cl_compose);
  m.impl("cuda_cl_compose_backward", &cl_compose_backward);
  m.impl("cuda_cl_bias_fold", &cl_bias_fold);
  m.impl("cuda_ck_fold", &ck_fold);
  m.impl("cuda_ck_fold_backward", &ck_fold_backward);
}
