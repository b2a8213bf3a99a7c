// CK fold kernels (launched from compose_launch.cuh). One block owns one tap of its output and a
// 32x32 tile of (rows, columns); it loops over the tap pairs that land there, so every output is
// written once, with no atomics. The block bodies (ck_*_tile) are shared with the work-list
// kernels (ck_worklist_kernels.cuh), which differ only in how a block finds its fold, tap and tile.
#pragma once

#include "expandnets/compose.h"
#include "expandnets/compose_tile.cuh"

namespace expandnets {
namespace detail {

// K[o0:, i0:, wy, wx] = sum over taps v of L with u = w - v inside E of L[:, :, v] @ E[:, :, u];
// out(o, i, v) stores an entry of that tap.
template <typename T, typename Out>
__device__ __forceinline__ void ck_forward_tile(const T* __restrict__ later, const T* __restrict__ earlier,
                                                const CkShape& s, int64_t wy, int64_t wx, int64_t o0, int64_t i0,
                                                Out out) {
  __shared__ SmemTile<T> lhs, rhs;
  T acc[2][2] = {};
  for (int64_t vy = 0; vy < s.a; ++vy) {
    const int64_t uy = wy - vy;
    if (uy < 0 || uy >= s.b) continue;  // block-uniform: no thread skips a barrier alone
    for (int64_t vx = 0; vx < s.a2; ++vx) {
      const int64_t ux = wx - vx;
      if (ux < 0 || ux >= s.b2) continue;
      for (int64_t c0 = 0; c0 < s.c; c0 += kTile) {
        fill_tile(lhs, [&](int r, int col) {
          const int64_t o = o0 + r, c = c0 + col;
          return o < s.o && c < s.c ? later[((o * s.c + c) * s.a + vy) * s.a2 + vx] : T(0);
        });
        fill_tile(rhs, [&](int r, int col) {
          const int64_t c = c0 + r, i = i0 + col;
          return c < s.c && i < s.i ? earlier[((c * s.i + i) * s.b + uy) * s.b2 + ux] : T(0);
        });
        __syncthreads();
        tile_mma(acc, lhs, rhs);
        __syncthreads();
      }
    }
  }
  write_patch(acc, o0, i0, s.o, s.i, out);
}

// dL[o0:, c0:, vy, vx] = sum over taps u of E, sum_i dK[o, i, v + u] E[c, i, u]; out(o, c, v).
template <typename T, typename Out>
__device__ __forceinline__ void ck_later_tile(const T* __restrict__ grad, const T* __restrict__ earlier,
                                              const CkShape& s, int64_t vy, int64_t vx, int64_t o0, int64_t c0,
                                              Out out) {
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  __shared__ SmemTile<T> lhs, rhs;
  T acc[2][2] = {};
  for (int64_t uy = 0; uy < s.b; ++uy) {
    for (int64_t ux = 0; ux < s.b2; ++ux) {
      for (int64_t i0 = 0; i0 < s.i; i0 += kTile) {
        fill_tile(lhs, [&](int r, int col) {
          const int64_t o = o0 + r, i = i0 + col;
          return o < s.o && i < s.i ? grad[((o * s.i + i) * kh + vy + uy) * kw + vx + ux] : T(0);
        });
        fill_tile(rhs, [&](int r, int col) {
          const int64_t i = i0 + r, c = c0 + col;
          return i < s.i && c < s.c ? earlier[((c * s.i + i) * s.b + uy) * s.b2 + ux] : T(0);
        });
        __syncthreads();
        tile_mma(acc, lhs, rhs);
        __syncthreads();
      }
    }
  }
  write_patch(acc, o0, c0, s.o, s.c, out);
}

// dE[c0:, i0:, uy, ux] = sum over taps v of L, sum_o L[o, c, v] dK[o, i, v + u]; out(c, i, v).
template <typename T, typename Out>
__device__ __forceinline__ void ck_earlier_tile(const T* __restrict__ grad, const T* __restrict__ later,
                                                const CkShape& s, int64_t uy, int64_t ux, int64_t c0, int64_t i0,
                                                Out out) {
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  __shared__ SmemTile<T> lhs, rhs;
  T acc[2][2] = {};
  for (int64_t vy = 0; vy < s.a; ++vy) {
    for (int64_t vx = 0; vx < s.a2; ++vx) {
      for (int64_t o0 = 0; o0 < s.o; o0 += kTile) {
        fill_tile(lhs, [&](int r, int col) {
          const int64_t c = c0 + r, o = o0 + col;
          return c < s.c && o < s.o ? later[((o * s.c + c) * s.a + vy) * s.a2 + vx] : T(0);
        });
        fill_tile(rhs, [&](int r, int col) {
          const int64_t o = o0 + r, i = i0 + col;
          return o < s.o && i < s.i ? grad[((o * s.i + i) * kh + vy + uy) * kw + vx + ux] : T(0);
        });
        __syncthreads();
        tile_mma(acc, lhs, rhs);
        __syncthreads();
      }
    }
  }
  write_patch(acc, c0, i0, s.c, s.i, out);
}

// K[o, i, w] = sum over taps v of L with u = w - v inside E of L[:, :, v] @ E[:, :, u].
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_forward_kernel(const T* __restrict__ later, const T* __restrict__ earlier, T* __restrict__ out, CkShape s) {
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  const int64_t wy = blockIdx.x / kw, wx = blockIdx.x % kw;
  ck_forward_tile(later, earlier, s, wy, wx, int64_t(blockIdx.y) * kTile, int64_t(blockIdx.z) * kTile,
                  [&](int64_t o, int64_t i, T v) { out[((o * s.i + i) * kh + wy) * kw + wx] = v; });
}

// dL[o, c, v] = sum over taps u of E, sum_i dK[o, i, v + u] E[c, i, u].
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_backward_later_kernel(const T* __restrict__ grad, const T* __restrict__ earlier, T* __restrict__ d_later,
                             CkShape s) {
  const int64_t vy = blockIdx.x / s.a2, vx = blockIdx.x % s.a2;
  ck_later_tile(grad, earlier, s, vy, vx, int64_t(blockIdx.y) * kTile, int64_t(blockIdx.z) * kTile,
                [&](int64_t o, int64_t c, T v) { d_later[((o * s.c + c) * s.a + vy) * s.a2 + vx] = v; });
}

// dE[c, i, u] = sum over taps v of L, sum_o L[o, c, v] dK[o, i, v + u].
template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_backward_earlier_kernel(const T* __restrict__ grad, const T* __restrict__ later, T* __restrict__ d_earlier,
                               CkShape s) {
  const int64_t uy = blockIdx.x / s.b2, ux = blockIdx.x % s.b2;
  ck_earlier_tile(grad, later, s, uy, ux, int64_t(blockIdx.y) * kTile, int64_t(blockIdx.z) * kTile,
                  [&](int64_t c, int64_t i, T v) { d_earlier[((c * s.i + i) * s.b + uy) * s.b2 + ux] = v; });
}

}  // namespace detail
}  // namespace expandnets
