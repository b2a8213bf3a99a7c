// The block bodies of the CL/FC composition: one 32x32 output tile of W, dW1, dW2 or dW3 (or 256
// entries of the folded bias) for one group, with the group's operands already located. Shared by
// the per-shape kernels (cl_kernels.cuh) and the work-list kernels (worklist_kernels.cuh), which
// differ only in how a block finds its group, tap and tile. Each chains its two products in one
// block: the intermediate tile (W2_t @ W1, or its gradient counterpart) is formed in registers and
// parked in shared memory, never in device memory. `out(row, col, value)` stores a result entry.
#pragma once

#include "expandnets/compose.h"
#include "expandnets/compose_tile.cuh"

namespace expandnets {
namespace detail {

// (dW_t @ W1^T)[o0 + r, a0 + c]: the intermediate that both the dW2 and the dW3 tiles chain.
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

// W_t[o0:, i0:] = sum over blocks of c of W3[:, c] @ (sum over blocks of a of W2_t[c, a] @ W1[a, :]);
// W1 (a, i), W2 (c, a, taps), W3 (o, c) of one group; out(o, i, v).
template <typename T, typename Out>
__device__ __forceinline__ void cl_forward_tile(const T* W1, const T* W2, const T* W3, int64_t t, int64_t o0,
                                                int64_t i0, const ClShape& s, Out out) {
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
  write_patch(acc, o0, i0, s.o, s.i, out);
}

// dW1[a0:, i0:] = sum_t W2_t^T @ (W3^T @ dW_t), taps reduced in-block; dW (o, i, taps); out(a, i, v).
template <typename T, typename Out>
__device__ __forceinline__ void cl_dw1_tile(const T* dW, const T* W2, const T* W3, int64_t a0, int64_t i0,
                                            const ClShape& s, Out out) {
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
  write_patch(acc, a0, i0, s.a, s.i, out);
}

// dW2_t[c0:, a0:] = W3^T @ (dW_t @ W1^T); out(c, a, v).
template <typename T, typename Out>
__device__ __forceinline__ void cl_dw2_tile(const T* dW, const T* W1, const T* W3, int64_t t, int64_t c0, int64_t a0,
                                            const ClShape& s, Out out) {
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
  write_patch(acc, c0, a0, s.c, s.a, out);
}

// dW3[o0:, c0:] = sum_t (dW_t @ W1^T) @ W2_t^T, taps reduced in-block; out(o, c, v).
template <typename T, typename Out>
__device__ __forceinline__ void cl_dw3_tile(const T* dW, const T* W1, const T* W2, int64_t o0, int64_t c0,
                                            const ClShape& s, Out out) {
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
  write_patch(acc, o0, c0, s.o, s.c, out);
}

constexpr int kBiasThreads = 256;

// bias[o] = b3[o] + sum_c W3[o, c] * (b2[c] + sum_a (sum_t W2[c, a, t]) b1[a]) for the 256 outputs
// from o_begin, all of one group (b1 (a), b2 (c), b3 and bias (o)); the inner vector is formed 256
// entries at a time in shared memory. Threads past the outputs still take part in the barriers.
template <typename T>
__device__ __forceinline__ void cl_bias_fold_block(const T* W2, const T* W3, const T* b1, const T* b2, const T* b3,
                                                   T* bias, int64_t o_begin, const ClShape& s) {
  const int64_t o = o_begin + threadIdx.x;
  __shared__ T inner[kBiasThreads];
  T acc = o < s.o ? b3[o] : T(0);
  for (int64_t c0 = 0; c0 < s.c; c0 += kBiasThreads) {
    const int64_t c = c0 + threadIdx.x;
    T v = T(0);
    if (c < s.c) {
      v = b2[c];
      for (int64_t a = 0; a < s.a; ++a) {
        T tap_sum = T(0);
        for (int64_t t = 0; t < s.taps; ++t) tap_sum += W2[(c * s.a + a) * s.taps + t];
        v = fma(tap_sum, b1[a], v);
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
  if (o < s.o) bias[o] = acc;
}

}  // namespace detail
}  // namespace expandnets
