// Launchers of the convolution passes (declared in conv.h, instantiated per scalar type in
// conv_*.cu): depthwise layers take the elementwise kernels, everything else the implicit GEMM.
#pragma once

#include <algorithm>
#include <type_traits>

#include "expandnets/conv.h"
#include "expandnets/conv_problems.cuh"
#include "expandnets/depthwise_kernels.cuh"
#include "expandnets/fma_math.cuh"
#include "expandnets/implicit_gemm.cuh"
#include "expandnets/partial_sums.cuh"
#include "expandnets/wmma_math.cuh"

namespace expandnets {
namespace detail {

// Blocks for a grid-stride loop over `total` elements: enough to fill any GPU, few enough to launch.
inline unsigned elementwise_blocks(int64_t total) {
  return unsigned(std::min<int64_t>(ceil_div(total, kElementwiseThreads), int64_t(1) << 20));
}

template <class Math, class Problem>
cudaError_t launch_gemm(const Problem& prob, int64_t z_blocks, cudaStream_t stream) {
  const int64_t x_blocks = ceil_div(prob.rows(), kGemmM), y_blocks = ceil_div(prob.cols(), kGemmN);
  if (x_blocks == 0 || y_blocks == 0 || z_blocks == 0) return cudaSuccess;
  if (!grid_fits(x_blocks, y_blocks, z_blocks)) return cudaErrorInvalidConfiguration;
  implicit_gemm_kernel<Problem, Math>
      <<<dim3(unsigned(x_blocks), unsigned(y_blocks), unsigned(z_blocks)), kGemmThreads, 0, stream>>>(prob);
  return cudaGetLastError();
}

// The math each scalar type runs: FMA for double and for float without TF32, tensor cores otherwise.
template <class Problem>
cudaError_t run_gemm(const Problem& prob, int64_t z_blocks, bool allow_tf32, cudaStream_t stream) {
  using T = typename Problem::Scalar;
  if constexpr (std::is_same<T, double>::value) {
    return launch_gemm<FmaMath<double>>(prob, z_blocks, stream);
  } else if constexpr (std::is_same<T, float>::value) {
    return allow_tf32 ? launch_gemm<WmmaMath<float>>(prob, z_blocks, stream)
                      : launch_gemm<FmaMath<float>>(prob, z_blocks, stream);
  } else {
    return launch_gemm<WmmaMath<T>>(prob, z_blocks, stream);
  }
}
template <typename T>
cudaError_t sum_partials(const acc_t<T>* partial, int64_t splits, int64_t length, T* out, cudaStream_t stream) {
  if (length == 0) return cudaSuccess;
  sum_partials_kernel<T><<<elementwise_blocks(length), kElementwiseThreads, 0, stream>>>(partial, splits, length, out);
  return cudaGetLastError();
}

}  // namespace detail

template <typename T>
cudaError_t conv2d_forward(const T* x, Strides4 sx, const T* weight, const T* bias, T* y, Strides4 sy,
                           const ConvShape& s, bool allow_tf32, cudaStream_t stream) {
  using namespace detail;
  if (conv2d_is_depthwise(s)) {
    const int64_t total = s.batch * s.channels * s.out_height * s.out_width;
    if (total == 0) return cudaSuccess;
    depthwise_forward_kernel<T><<<elementwise_blocks(total), kDepthwiseThreads, 0, stream>>>(
        x, sx, weight, bias, y, sy, s, sy.c < sy.w);
    return cudaGetLastError();
  }
  const ForwardProblem<T> prob{x, sx, weight, bias, y, sy, s, s.channels / s.groups, s.out_channels / s.groups,
                               s.kernel_h * s.kernel_w};
  return run_gemm(prob, s.groups, allow_tf32, stream);
}

template <typename T>
cudaError_t conv2d_input_grad(const T* dy, Strides4 sdy, const T* weight, T* dx, Strides4 sdx, const ConvShape& s,
                              bool allow_tf32, cudaStream_t stream) {
  using namespace detail;
  if (conv2d_is_depthwise(s)) {
    const int64_t total = s.batch * s.channels * s.height * s.width;
    if (total == 0) return cudaSuccess;
    depthwise_input_grad_kernel<T><<<elementwise_blocks(total), kDepthwiseThreads, 0, stream>>>(
        dy, sdy, weight, dx, sdx, s, sdx.c < sdx.w);
    return cudaGetLastError();
  }
  const InputGradProblem<T> prob{dy, sdy, weight, dx, sdx, s, s.channels / s.groups, s.out_channels / s.groups,
                                 s.kernel_h * s.kernel_w};
  return run_gemm(prob, s.groups, allow_tf32, stream);
}

template <typename T>
size_t conv2d_weight_grad_workspace_bytes(const ConvShape& s) {
  const detail::PixelSplit split = detail::weight_grad_split(s);
  const int64_t weight_numel = s.out_channels * (s.channels / s.groups) * s.kernel_h * s.kernel_w;
  return sizeof(detail::acc_t<T>) * size_t(split.count) * size_t(weight_numel + s.out_channels);
}

template <typename T>
cudaError_t conv2d_weight_grad(const T* x, Strides4 sx, const T* dy, Strides4 sdy, T* dweight, T* dbias,
                               void* workspace, const ConvShape& s, bool allow_tf32, cudaStream_t stream) {
  using namespace detail;
  using Acc = acc_t<T>;
  const int64_t cg = s.channels / s.groups, taps = s.kernel_h * s.kernel_w;
  const int64_t weight_numel = s.out_channels * cg * taps;
  const PixelSplit split = weight_grad_split(s);
  if (split.count == 0) {  // an empty batch: both gradients are zero
    cudaError_t err = cudaMemsetAsync(dweight, 0, sizeof(T) * size_t(weight_numel), stream);
    if (err == cudaSuccess && dbias != nullptr) {
      err = cudaMemsetAsync(dbias, 0, sizeof(T) * size_t(s.out_channels), stream);
    }
    return err;
  }
  Acc* partial = static_cast<Acc*>(workspace);
  Acc* bias_partial = dbias != nullptr ? partial + split.count * weight_numel : nullptr;
  cudaError_t err;
  if (conv2d_is_depthwise(s)) {
    if (!grid_fits(s.channels, split.count, 1)) return cudaErrorInvalidConfiguration;
    const dim3 grid(unsigned(s.channels), unsigned(split.count));
    depthwise_weight_grad_kernel<T><<<grid, kDepthwiseThreads, 0, stream>>>(x, sx, dy, sdy, partial, bias_partial, s,
                                                                            split.chunk);
    err = cudaGetLastError();
  } else {
    const WeightGradProblem<T> prob{x, sx, dy, sdy, partial, bias_partial, s, cg, s.out_channels / s.groups, taps,
                                    split.count, split.chunk};
    err = run_gemm(prob, s.groups * split.count, allow_tf32, stream);
  }
  if (err != cudaSuccess) return err;
  err = sum_partials(partial, split.count, weight_numel, dweight, stream);
  if (err != cudaSuccess || dbias == nullptr) return err;
  return sum_partials(bias_partial, split.count, s.out_channels, dbias, stream);
}

}  // namespace expandnets
