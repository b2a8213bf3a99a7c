// Argument checks shared by the ops of csrc/binding/: every message names the op and the argument,
// so a wrong call fails at the binding with a fix, not inside a kernel. Also the dtype dispatch
// (which refuses the dtypes a family has no kernels for) and the launch-error check.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "expandnets/compose.h"

namespace expandnets::binding {

template <typename T>
struct Tag {
  using type = T;
};

// f(Tag<T>{}) with T the kernels' scalar type for t's dtype: float32/float64 for the composition.
template <typename F>
void dispatch_compose(const char* op, const at::Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(Tag<float>{});
    case at::kDouble: return f(Tag<double>{});
    default:
      TORCH_CHECK(false, op, ": the composition runs in float32 or float64, got ", t.scalar_type(),
                  "; cast the weights first");
  }
}

// ... and float32/float64/float16/bfloat16 for the convolution.
template <typename F>
void dispatch_conv(const char* op, const at::Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(Tag<float>{});
    case at::kDouble: return f(Tag<double>{});
    case at::kHalf: return f(Tag<__half>{});
    case at::kBFloat16: return f(Tag<__nv_bfloat16>{});
    default:
      TORCH_CHECK(false, op, ": supported dtypes are float32, float64, float16 and bfloat16, got ", t.scalar_type());
  }
}

inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidConfiguration ? " (a dimension exceeds the kernels' grid limits)" : "");
}

// Same device and dtype as `like`, on CUDA, with the given number of dimensions.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but the other arguments are on ",
              like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but the other arguments have ", like.scalar_type());
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
}

inline void check_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous() first); got strides ",
              t.strides());
}

inline void check_weight(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like, int64_t dim) {
  check_tensor(op, name, t, like, dim);
  check_contiguous(op, name, t);
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
}

// The composition's operands, checked here because the per-unit ops (compose.cpp) and the work
// lists (worklist_tables.cpp) take the same ones.

// w1 (G, A, I), w2 (G, C, A, T), w3 (G, O, C).
inline ClShape cl_shape(const char* op, const at::Tensor& w1, const at::Tensor& w2, const at::Tensor& w3) {
  check_weight(op, "w1", w1, w2, 3);
  check_weight(op, "w2", w2, w2, 4);
  check_weight(op, "w3", w3, w2, 3);
  const int64_t groups = w1.size(0), a = w1.size(1), i = w1.size(2);
  TORCH_CHECK(w2.size(0) == groups && w2.size(2) == a, op, ": w2 must be (groups, c, a, taps) with groups=", groups,
              " and a=", a, " as in w1 ", w1.sizes(), ", got ", w2.sizes());
  const int64_t c = w2.size(1), taps = w2.size(3);
  TORCH_CHECK(w3.size(0) == groups && w3.size(2) == c, op, ": w3 must be (groups, o, c) with groups=", groups,
              " and c=", c, " as in w2 ", w2.sizes(), ", got ", w3.sizes());
  return {groups, a, i, c, w3.size(1), taps};
}

// later (O, C, a, a2), earlier (C, I, b, b2).
inline CkShape ck_shape(const char* op, const at::Tensor& later, const at::Tensor& earlier) {
  check_weight(op, "later", later, later, 4);
  check_weight(op, "earlier", earlier, later, 4);
  TORCH_CHECK(earlier.size(0) == later.size(1), op, ": earlier must have as many output channels (", earlier.size(0),
              ") as later has input channels (", later.size(1), "); later ", later.sizes(), ", earlier ",
              earlier.sizes());
  return {later.size(0), later.size(1), earlier.size(1), later.size(2), later.size(3), earlier.size(2),
          earlier.size(3)};
}

}  // namespace expandnets::binding
