// The work-list kernels (launched from worklist_launch.cuh): one block per item of one kind over
// all units; the block finds its unit, then its group, tap and tile within the unit, and runs the
// same tile as the per-shape kernels (cl_tiles.cuh).
#pragma once

#include "expandnets/cl_tiles.cuh"
#include "expandnets/worklist.h"
#include "expandnets/worklist_items.cuh"

namespace expandnets {
namespace detail {

static_assert(kClWorkTile == kTile && kClWorkVector == kBiasThreads, "work items are the composition's tiles");

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_worklist_forward_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units, T* __restrict__ w) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkForward, item);
  const ClShape s = u.shape;
  const TileIndex at = tile_index(item - u.item_begin[kClWorkForward], s.o, s.i);
  const int64_t g = at.outer / s.taps, t = at.outer % s.taps;
  T* W = w + u.w_at + g * s.o * s.i * s.taps;
  cl_forward_tile(u.w1 + g * s.a * s.i, u.w2 + g * s.c * s.a * s.taps, u.w3 + g * s.o * s.c, t, at.y0, at.x0, s,
                  [&](int64_t o, int64_t i, T v) { W[(o * s.i + i) * s.taps + t] = v; });
}

template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    cl_worklist_bias_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units, T* __restrict__ bias) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkBias, item);
  const ClShape s = u.shape;
  const int64_t local = item - u.item_begin[kClWorkBias], blocks = ceil_div(s.o, kBiasThreads);
  const int64_t g = local / blocks;
  cl_bias_fold_block(u.w2 + g * s.c * s.a * s.taps, u.w3 + g * s.o * s.c, u.b1 + g * s.a, u.b2 + g * s.c,
                     u.b3 + g * s.o, bias + u.bias_at + g * s.o, (local % blocks) * kBiasThreads, s);
}

// The bias fold's vectors per group, for its gradient: inner[c] = b2[c] + sum_a (sum_t W2[c, a, t]) b1[a]
// and db2[c] = d_inner[c] = sum_o W3[o, c] grad_bias[o]. One thread per c; no barrier.
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    cl_worklist_bias_vectors_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units,
                                    const T* __restrict__ grad_bias, T* __restrict__ inner, T* __restrict__ db2) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkBiasVectors, item);
  const ClShape s = u.shape;
  const int64_t local = item - u.item_begin[kClWorkBiasVectors], blocks = ceil_div(s.c, kBiasThreads);
  const int64_t g = local / blocks, c = (local % blocks) * kBiasThreads + threadIdx.x;
  if (c >= s.c) return;
  const T* W2 = u.w2 + g * s.c * s.a * s.taps;
  const T* W3 = u.w3 + g * s.o * s.c;
  const T* b1 = u.b1 + g * s.a;
  const T* gb = grad_bias + u.bias_at + g * s.o;
  T v = u.b2[g * s.c + c];
  for (int64_t a = 0; a < s.a; ++a) {
    T tap_sum = T(0);
    for (int64_t t = 0; t < s.taps; ++t) tap_sum += W2[(c * s.a + a) * s.taps + t];
    v = fma(tap_sum, b1[a], v);
  }
  T d = T(0);
  for (int64_t o = 0; o < s.o; ++o) d = fma(W3[o * s.c + c], gb[o], d);
  inner[u.c_at + g * s.c + c] = v;
  db2[u.c_at + g * s.c + c] = d;
}

// db1[a] = sum_c (sum_t W2[c, a, t]) db2[c], per group; one thread per a, after the vectors kernel.
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    cl_worklist_db1_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units, const T* __restrict__ db2,
                           T* __restrict__ db1) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkDb1, item);
  const ClShape s = u.shape;
  const int64_t local = item - u.item_begin[kClWorkDb1], blocks = ceil_div(s.a, kBiasThreads);
  const int64_t g = local / blocks, a = (local % blocks) * kBiasThreads + threadIdx.x;
  if (a >= s.a) return;
  const T* W2 = u.w2 + g * s.c * s.a * s.taps;
  const T* d_inner = db2 + u.c_at + g * s.c;
  T acc = T(0);
  for (int64_t c = 0; c < s.c; ++c) {
    T tap_sum = T(0);
    for (int64_t t = 0; t < s.taps; ++t) tap_sum += W2[(c * s.a + a) * s.taps + t];
    acc = fma(tap_sum, d_inner[c], acc);
  }
  db1[u.a_at + g * s.a + a] = acc;
}

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_worklist_dw1_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units, const T* __restrict__ grad_w,
                           T* __restrict__ dw1) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkDw1, item);
  const ClShape s = u.shape;
  const TileIndex at = tile_index(item - u.item_begin[kClWorkDw1], s.a, s.i);
  const int64_t g = at.outer;
  T* out = dw1 + u.w1_at + g * s.a * s.i;
  cl_dw1_tile(grad_w + u.w_at + g * s.o * s.i * s.taps, u.w2 + g * s.c * s.a * s.taps, u.w3 + g * s.o * s.c, at.y0,
              at.x0, s, [&](int64_t a, int64_t i, T v) { out[a * s.i + i] = v; });
}

// dW2 (+ db2[c] b1[a] on every tap, the bias fold's term, where db2 is given).
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_worklist_dw2_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units, const T* __restrict__ grad_w,
                           const T* __restrict__ db2, T* __restrict__ dw2) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkDw2, item);
  const ClShape s = u.shape;
  const TileIndex at = tile_index(item - u.item_begin[kClWorkDw2], s.c, s.a);
  const int64_t g = at.outer / s.taps, t = at.outer % s.taps;
  T* out = dw2 + u.w2_at + g * s.c * s.a * s.taps;
  const T* d_inner = db2 != nullptr ? db2 + u.c_at + g * s.c : nullptr;
  const T* b1 = d_inner != nullptr ? u.b1 + g * s.a : nullptr;
  cl_dw2_tile(grad_w + u.w_at + g * s.o * s.i * s.taps, u.w1 + g * s.a * s.i, u.w3 + g * s.o * s.c, t, at.y0, at.x0,
              s, [&](int64_t c, int64_t a, T v) {
                out[(c * s.a + a) * s.taps + t] = d_inner != nullptr ? fma(d_inner[c], b1[a], v) : v;
              });
}

// dW3 (+ grad_bias[o] inner[c], the bias fold's term, where grad_bias is given).
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    cl_worklist_dw3_kernel(const ClWorkUnit<T>* __restrict__ units, int64_t n_units, const T* __restrict__ grad_w,
                           const T* __restrict__ grad_bias, const T* __restrict__ inner, T* __restrict__ dw3) {
  const int64_t item = blockIdx.x;
  const ClWorkUnit<T>& u = find_owner(units, n_units, kClWorkDw3, item);
  const ClShape s = u.shape;
  const TileIndex at = tile_index(item - u.item_begin[kClWorkDw3], s.o, s.c);
  const int64_t g = at.outer;
  T* out = dw3 + u.w3_at + g * s.o * s.c;
  const T* gb = grad_bias != nullptr ? grad_bias + u.bias_at + g * s.o : nullptr;
  const T* v_inner = gb != nullptr ? inner + u.c_at + g * s.c : nullptr;
  cl_dw3_tile(grad_w + u.w_at + g * s.o * s.i * s.taps, u.w1 + g * s.a * s.i, u.w2 + g * s.c * s.a * s.taps, at.y0,
              at.x0, s, [&](int64_t o, int64_t c, T v) {
                out[o * s.c + c] = gb != nullptr ? fma(gb[o], v_inner[c], v) : v;
              });
}

}  // namespace detail
}  // namespace expandnets
