// CL/FC composition kernels of one shape (launched from compose_launch.cuh): each block finds its
// group, tap and tile in the grid and runs the tile of cl_tiles.cuh.
#pragma once

#include "expandnets/cl_tiles.cuh"
#include "expandnets/compose.h"

namespace expandnets {
namespace detail {

// One block per (group, tap) and 32x32 tile of W[g, :, :, t].
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_forward_kernel(const T* __restrict__ w1, const T* __restrict__ w2, const T* __restrict__ w3,
                      T* __restrict__ out, ClShape s) {
  const int64_t g = blockIdx.x / s.taps, t = blockIdx.x % s.taps;
  const int64_t o0 = int64_t(blockIdx.y) * kTile, i0 = int64_t(blockIdx.z) * kTile;
  T* W = out + g * s.o * s.i * s.taps;
  cl_forward_tile(w1 + g * s.a * s.i, w2 + g * s.c * s.a * s.taps, w3 + g * s.o * s.c, t, o0, i0, s,
                  [&](int64_t o, int64_t i, T v) { W[(o * s.i + i) * s.taps + t] = v; });
}

// dW1[g] = sum_t W2_t^T @ (W3^T @ dW_t): one block per group and 32x32 tile of dW1; taps reduced in-block.
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_backward_w1_kernel(const T* __restrict__ grad, const T* __restrict__ w2, const T* __restrict__ w3,
                          T* __restrict__ dw1, ClShape s) {
  const int64_t g = blockIdx.x, a0 = int64_t(blockIdx.y) * kTile, i0 = int64_t(blockIdx.z) * kTile;
  T* out = dw1 + g * s.a * s.i;
  cl_dw1_tile(grad + g * s.o * s.i * s.taps, w2 + g * s.c * s.a * s.taps, w3 + g * s.o * s.c, a0, i0, s,
              [&](int64_t a, int64_t i, T v) { out[a * s.i + i] = v; });
}

// dW2[g, :, :, t] = W3^T @ (dW_t @ W1^T): one block per (group, tap) and 32x32 tile of dW2_t.
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_backward_w2_kernel(const T* __restrict__ grad, const T* __restrict__ w1, const T* __restrict__ w3,
                          T* __restrict__ dw2, ClShape s) {
  const int64_t g = blockIdx.x / s.taps, t = blockIdx.x % s.taps;
  const int64_t c0 = int64_t(blockIdx.y) * kTile, a0 = int64_t(blockIdx.z) * kTile;
  T* out = dw2 + g * s.c * s.a * s.taps;
  cl_dw2_tile(grad + g * s.o * s.i * s.taps, w1 + g * s.a * s.i, w3 + g * s.o * s.c, t, c0, a0, s,
              [&](int64_t c, int64_t a, T v) { out[(c * s.a + a) * s.taps + t] = v; });
}

// dW3[g] = sum_t (dW_t @ W1^T) @ W2_t^T: one block per group and 32x32 tile of dW3; taps reduced in-block.
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_backward_w3_kernel(const T* __restrict__ grad, const T* __restrict__ w1, const T* __restrict__ w2,
                          T* __restrict__ dw3, ClShape s) {
  const int64_t g = blockIdx.x, o0 = int64_t(blockIdx.y) * kTile, c0 = int64_t(blockIdx.z) * kTile;
  T* out = dw3 + g * s.o * s.c;
  cl_dw3_tile(grad + g * s.o * s.i * s.taps, w1 + g * s.a * s.i, w2 + g * s.c * s.a * s.taps, o0, c0, s,
              [&](int64_t o, int64_t c, T v) { out[o * s.c + c] = v; });
}

// The folded bias: one block per group and 256 outputs.
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    cl_bias_fold_kernel(const T* __restrict__ w2, const T* __restrict__ w3, const T* __restrict__ b1,
                        const T* __restrict__ b2, const T* __restrict__ b3, T* __restrict__ bias, ClShape s) {
  const int64_t g = blockIdx.x;
  cl_bias_fold_block(w2 + g * s.c * s.a * s.taps, w3 + g * s.o * s.c, b1 + g * s.a, b2 + g * s.c, b3 + g * s.o,
                     bias + g * s.o, int64_t(blockIdx.y) * kBiasThreads, s);
}

}  // namespace detail
}  // namespace expandnets
