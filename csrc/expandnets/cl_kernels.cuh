// CL/FC composition kernels (launched from compose_launch.cuh).
// Each kernel chains its two products in one block: the intermediate tile (W2_t @ W1, or its
// gradient counterpart) is formed in registers and parked in shared memory, never in device memory.
#pragma once

#include "expandnets/compose.h"
#include "expandnets/compose_tile.cuh"

namespace expandnets {
namespace detail {

// (dW_t @ W1^T)[o0 + r, a0 + c]: the intermediate that both the dW2 and the dW3 kernels chain.
template <typename T>
__device__ __forceinline__ void grad_times_w1t(T (&part)[2][2], SmemTile<T>& lhs, SmemTile<T>& rhs, const T* dW,
                                               const T* W1, int64_t o0, int64_t a0, int64_t t, const ClShape& s) {
  tile_gemm(
      part, lhs, rhs, s.i,
      [&](int r, int64_t i) {
        const int64_t o = o0 + r;
        return o < s.o && i < s.i ? dW[(o * s.i + i) * s.taps + t] : T(0);
      },
      [&](int64_t i, int c) {
        const int64_t a = a0 + c;
        return i < s.i && a < s.a ? W1[a * s.i + i] : T(0);
      });
}

// One block per (group, tap) and 32x32 tile of W[g, :, :, t]:
// W = sum over blocks of c of W3[:, c] @ (sum over blocks of a of W2_t[c, a] @ W1[a, :]).
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_forward_kernel(const T* __restrict__ w1, const T* __restrict__ w2, const T* __restrict__ w3,
                      T* __restrict__ out, ClShape s) {
  const int64_t g = blockIdx.x / s.taps, t = blockIdx.x % s.taps;
  const int64_t o0 = int64_t(blockIdx.y) * kTile, i0 = int64_t(blockIdx.z) * kTile;
  const T* W1 = w1 + g * s.a * s.i;
  const T* W2 = w2 + g * s.c * s.a * s.taps;
  const T* W3 = w3 + g * s.o * s.c;
  __shared__ SmemTile<T> lhs, rhs, inner;
  T acc[2][2] = {};
  for (int64_t c0 = 0; c0 < s.c; c0 += kTile) {
    T part[2][2] = {};  // (W2_t @ W1)[c0 + r, i0 + col]
    tile_gemm(
        part, lhs, rhs, s.a,
        [&](int r, int64_t a) {
          const int64_t c = c0 + r;
          return c < s.c && a < s.a ? W2[(c * s.a + a) * s.taps + t] : T(0);
        },
        [&](int64_t a, int col) {
          const int64_t i = i0 + col;
          return a < s.a && i < s.i ? W1[a * s.i + i] : T(0);
        });
    chain_left(acc, lhs, inner, part, [&](int r, int col) {
      const int64_t o = o0 + r, c = c0 + col;
      return o < s.o && c < s.c ? W3[o * s.c + c] : T(0);
    });
  }
  T* W = out + g * s.o * s.i * s.taps;
  write_patch(acc, o0, i0, s.o, s.i, [&](int64_t o, int64_t i, T v) { W[(o * s.i + i) * s.taps + t] = v; });
}

// dW1[g] = sum_t W2_t^T @ (W3^T @ dW_t): one block per group and 32x32 tile of dW1; taps reduced in-block.
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_backward_w1_kernel(const T* __restrict__ grad, const T* __restrict__ w2, const T* __restrict__ w3,
                          T* __restrict__ dw1, ClShape s) {
  const int64_t g = blockIdx.x, a0 = int64_t(blockIdx.y) * kTile, i0 = int64_t(blockIdx.z) * kTile;
  const T* dW = grad + g * s.o * s.i * s.taps;
  const T* W2 = w2 + g * s.c * s.a * s.taps;
  const T* W3 = w3 + g * s.o * s.c;
  __shared__ SmemTile<T> lhs, rhs, inner;
  T acc[2][2] = {};
  for (int64_t t = 0; t < s.taps; ++t) {
    for (int64_t c0 = 0; c0 < s.c; c0 += kTile) {
      T part[2][2] = {};  // (W3^T @ dW_t)[c0 + r, i0 + col]
      tile_gemm(
          part, lhs, rhs, s.o,
          [&](int r, int64_t o) {
            const int64_t c = c0 + r;
            return c < s.c && o < s.o ? W3[o * s.c + c] : T(0);
          },
          [&](int64_t o, int col) {
            const int64_t i = i0 + col;
            return o < s.o && i < s.i ? dW[(o * s.i + i) * s.taps + t] : T(0);
          });
      chain_left(acc, lhs, inner, part, [&](int r, int col) {
        const int64_t a = a0 + r, c = c0 + col;
        return a < s.a && c < s.c ? W2[(c * s.a + a) * s.taps + t] : T(0);
      });
    }
  }
  T* out = dw1 + g * s.a * s.i;
  write_patch(acc, a0, i0, s.a, s.i, [&](int64_t a, int64_t i, T v) { out[a * s.i + i] = v; });
}

// dW2[g, :, :, t] = W3^T @ (dW_t @ W1^T): one block per (group, tap) and 32x32 tile of dW2_t.
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_backward_w2_kernel(const T* __restrict__ grad, const T* __restrict__ w1, const T* __restrict__ w3,
                          T* __restrict__ dw2, ClShape s) {
  const int64_t g = blockIdx.x / s.taps, t = blockIdx.x % s.taps;
  const int64_t c0 = int64_t(blockIdx.y) * kTile, a0 = int64_t(blockIdx.z) * kTile;
  const T* dW = grad + g * s.o * s.i * s.taps;
  const T* W1 = w1 + g * s.a * s.i;
  const T* W3 = w3 + g * s.o * s.c;
  __shared__ SmemTile<T> lhs, rhs, inner;
  T acc[2][2] = {};
  for (int64_t o0 = 0; o0 < s.o; o0 += kTile) {
    T part[2][2] = {};
    grad_times_w1t(part, lhs, rhs, dW, W1, o0, a0, t, s);
    chain_left(acc, lhs, inner, part, [&](int r, int col) {
      const int64_t c = c0 + r, o = o0 + col;
      return c < s.c && o < s.o ? W3[o * s.c + c] : T(0);
    });
  }
  T* out = dw2 + g * s.c * s.a * s.taps;
  write_patch(acc, c0, a0, s.c, s.a, [&](int64_t c, int64_t a, T v) { out[(c * s.a + a) * s.taps + t] = v; });
}

// dW3[g] = sum_t (dW_t @ W1^T) @ W2_t^T: one block per group and 32x32 tile of dW3; taps reduced in-block.
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_backward_w3_kernel(const T* __restrict__ grad, const T* __restrict__ w1, const T* __restrict__ w2,
                          T* __restrict__ dw3, ClShape s) {
  const int64_t g = blockIdx.x, o0 = int64_t(blockIdx.y) * kTile, c0 = int64_t(blockIdx.z) * kTile;
  const T* dW = grad + g * s.o * s.i * s.taps;
  const T* W1 = w1 + g * s.a * s.i;
  const T* W2 = w2 + g * s.c * s.a * s.taps;
  __shared__ SmemTile<T> lhs, rhs, inner;
  T acc[2][2] = {};
  for (int64_t t = 0; t < s.taps; ++t) {
    for (int64_t a0 = 0; a0 < s.a; a0 += kTile) {
      T part[2][2] = {};
      grad_times_w1t(part, lhs, rhs, dW, W1, o0, a0, t, s);
      chain_right(acc, rhs, inner, part, [&](int r, int col) {
        const int64_t a = a0 + r, c = c0 + col;
        return a < s.a && c < s.c ? W2[(c * s.a + a) * s.taps + t] : T(0);
      });
    }
  }
  T* out = dw3 + g * s.o * s.c;
  write_patch(acc, o0, c0, s.o, s.c, [&](int64_t o, int64_t c, T v) { out[o * s.c + c] = v; });
}

constexpr int kBiasThreads = 256;

// bias[g, o] = b3[g, o] + sum_c W3[g, o, c] * (b2[g, c] + sum_a (sum_t W2[g, c, a, t]) b1[g, a]): one
// block per group and 256 outputs; the inner vector is formed 256 entries at a time in shared memory.
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    cl_bias_fold_kernel(const T* __restrict__ w2, const T* __restrict__ w3, const T* __restrict__ b1,
                        const T* __restrict__ b2, const T* __restrict__ b3, T* __restrict__ bias, ClShape s) {
  const int64_t g = blockIdx.x, o = int64_t(blockIdx.y) * kBiasThreads + threadIdx.x;
  const T* W2 = w2 + g * s.c * s.a * s.taps;
  const T* W3 = w3 + g * s.o * s.c;
  __shared__ T inner[kBiasThreads];
  T acc = o < s.o ? b3[g * s.o + o] : T(0);
  for (int64_t c0 = 0; c0 < s.c; c0 += kBiasThreads) {
    const int64_t c = c0 + threadIdx.x;
    T v = T(0);
    if (c < s.c) {
      v = b2[g * s.c + c];
      for (int64_t a = 0; a < s.a; ++a) {
        T tap_sum = T(0);
        for (int64_t t = 0; t < s.taps; ++t) tap_sum += W2[(c * s.a + a) * s.taps + t];
        v = fma(tap_sum, b1[g * s.a + a], v);
      }
    }
    inner[threadIdx.x] = v;
    __syncthreads();
    if (o < s.o) {
      const int64_t block_c = s.c - c0 < kBiasThreads ? s.c - c0 : kBiasThreads;
      for (int64_t k = 0; k < block_c; ++k) acc = fma(W3[o * s.c + c0 + k], inner[k], acc);
    }
    __syncthreads();
  }
  if (o < s.o) bias[g * s.o + o] = acc;
}

}  // namespace detail
}  // namespace expandnets
