// Launchers of the composition kernels (declared in compose.h, instantiated per scalar type in
// compose_*.cu).
#pragma once

#include "expandnets/ck_kernels.cuh"
#include "expandnets/cl_kernels.cuh"
#include "expandnets/compose.h"

namespace expandnets {
namespace detail {

// Grid of 16x16-thread blocks for the tile kernels; nothing to do when a dimension is empty.
template <typename Kernel, typename... Args>
cudaError_t launch_tiled(Kernel kernel, int64_t x, int64_t y, int64_t z, cudaStream_t stream, Args... args) {
  if (x == 0 || y == 0 || z == 0) return cudaSuccess;
  if (!grid_fits(x, y, z)) return cudaErrorInvalidConfiguration;
  kernel<<<dim3(unsigned(x), unsigned(y), unsigned(z)), dim3(kTileThreads, kTileThreads), 0, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace detail

template <typename T>
cudaError_t cl_compose_forward(const T* w1, const T* w2, const T* w3, T* w, const ClShape& s, cudaStream_t stream) {
  using namespace detail;
  return launch_tiled(cl_forward_kernel<T>, s.groups * s.taps, ceil_div(s.o, kTile), ceil_div(s.i, kTile), stream,
                      w1, w2, w3, w, s);
}

template <typename T>
cudaError_t cl_compose_backward(const T* grad, const T* w1, const T* w2, const T* w3, T* dw1, T* dw2, T* dw3,
                                const ClShape& s, cudaStream_t stream) {
  using namespace detail;
  cudaError_t err = launch_tiled(cl_backward_w1_kernel<T>, s.groups, ceil_div(s.a, kTile), ceil_div(s.i, kTile),
                                 stream, grad, w2, w3, dw1, s);
  if (err != cudaSuccess) return err;
  err = launch_tiled(cl_backward_w2_kernel<T>, s.groups * s.taps, ceil_div(s.c, kTile), ceil_div(s.a, kTile),
                     stream, grad, w1, w3, dw2, s);
  if (err != cudaSuccess) return err;
  return launch_tiled(cl_backward_w3_kernel<T>, s.groups, ceil_div(s.o, kTile), ceil_div(s.c, kTile), stream,
                      grad, w1, w2, dw3, s);
}

template <typename T>
cudaError_t cl_bias_fold(const T* w2, const T* w3, const T* b1, const T* b2, const T* b3, T* bias,
                         const ClShape& s, cudaStream_t stream) {
  using namespace detail;
  const int64_t blocks = ceil_div(s.o, kBiasThreads);
  if (s.groups == 0 || blocks == 0) return cudaSuccess;
  if (!grid_fits(s.groups, blocks, 1)) return cudaErrorInvalidConfiguration;
  cl_bias_fold_kernel<T><<<dim3(unsigned(s.groups), unsigned(blocks)), kBiasThreads, 0, stream>>>(
      w2, w3, b1, b2, b3, bias, s);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ck_fold_forward(const T* later, const T* earlier, T* out, const CkShape& s, cudaStream_t stream) {
  using namespace detail;
  return launch_tiled(ck_forward_kernel<T>, (s.a + s.b - 1) * (s.a2 + s.b2 - 1), ceil_div(s.o, kTile),
                      ceil_div(s.i, kTile), stream, later, earlier, out, s);
}

template <typename T>
cudaError_t ck_fold_backward(const T* grad, const T* later, const T* earlier, T* d_later, T* d_earlier,
                             const CkShape& s, cudaStream_t stream) {
  using namespace detail;
  const cudaError_t err = launch_tiled(ck_backward_later_kernel<T>, s.a * s.a2, ceil_div(s.o, kTile),
                                       ceil_div(s.c, kTile), stream, grad, earlier, d_later, s);
  if (err != cudaSuccess) return err;
  return launch_tiled(ck_backward_earlier_kernel<T>, s.b * s.b2, ceil_div(s.c, kTile), ceil_div(s.i, kTile), stream,
                      grad, later, d_earlier, s);
}

}  // namespace expandnets
