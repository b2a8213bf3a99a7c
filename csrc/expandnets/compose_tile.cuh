// The building block of every composition kernel: 32x32 tiles in shared memory multiplied by a
// 16x16 thread block in which each thread owns a 2x2 patch of the result. The composition is
// weight-sized, so this favours exactness (FMA in the scalar type) and clarity over peak speed.
#pragma once

#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

constexpr int kTile = 32;
constexpr int kTileThreads = 16;  // per edge of the thread block
// Blocks per SM the tile kernels are built for: a register budget of 128 per thread. Without it
// ptxas (CUDA 13) aims at 64 registers and the float64 backward kernels spill (16 B stack frame).
constexpr int kTileMinBlocks = 2;

template <typename T>
using SmemTile = T[kTile][kTile + 1];  // +1: columns fall in distinct banks

// tile[r][c] = value(r, c) for the whole tile; value() returns zero outside its operand.
template <typename T, typename F>
__device__ __forceinline__ void fill_tile(SmemTile<T>& tile, F value) {
  const int tid = threadIdx.y * kTileThreads + threadIdx.x;
  for (int e = tid; e < kTile * kTile; e += kTileThreads * kTileThreads) {
    tile[e / kTile][e % kTile] = value(e / kTile, e % kTile);
  }
}

// acc += a @ b for this thread's patch: rows threadIdx.y + 16 r, columns threadIdx.x + 16 c.
template <typename T>
__device__ __forceinline__ void tile_mma(T (&acc)[2][2], const SmemTile<T>& a, const SmemTile<T>& b) {
  const int ty = threadIdx.y, tx = threadIdx.x;
#pragma unroll 8
  for (int k = 0; k < kTile; ++k) {
    const T a0 = a[ty][k], a1 = a[ty + kTileThreads][k];
    const T b0 = b[k][tx], b1 = b[k][tx + kTileThreads];
    acc[0][0] = fma(a0, b0, acc[0][0]);
    acc[0][1] = fma(a0, b1, acc[0][1]);
    acc[1][0] = fma(a1, b0, acc[1][0]);
    acc[1][1] = fma(a1, b1, acc[1][1]);
  }
}

// Park this thread's patch in a tile, where the next product reads it as an operand.
template <typename T>
__device__ __forceinline__ void store_patch(SmemTile<T>& tile, const T (&acc)[2][2]) {
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 2; ++c) tile[threadIdx.y + kTileThreads * r][threadIdx.x + kTileThreads * c] = acc[r][c];
  }
}

// acc += Left @ Right over a reduction of length k, one kTile slice at a time: left(r, kk) and
// right(kk, c) give the operands' elements (zero outside them) for block row r, reduction index kk
// and block column c.
template <typename T, typename Left, typename Right>
__device__ __forceinline__ void tile_gemm(T (&acc)[2][2], SmemTile<T>& lhs, SmemTile<T>& rhs, int64_t k, Left left,
                                          Right right) {
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    fill_tile(lhs, [&](int r, int c) { return left(r, k0 + c); });
    fill_tile(rhs, [&](int r, int c) { return right(k0 + r, c); });
    __syncthreads();
    tile_mma(acc, lhs, rhs);
    __syncthreads();
  }
}

// The chain's second product with the intermediate on the right: acc += L @ part, where L's tile is
// value(r, c) and part (one kTile-wide block of the intermediate) is parked in shared memory first.
template <typename T, typename F>
__device__ __forceinline__ void chain_left(T (&acc)[2][2], SmemTile<T>& lhs, SmemTile<T>& inner,
                                           const T (&part)[2][2], F value) {
  store_patch(inner, part);
  fill_tile(lhs, value);
  __syncthreads();
  tile_mma(acc, lhs, inner);
  __syncthreads();
}

// The same with the intermediate on the left: acc += part @ R.
template <typename T, typename F>
__device__ __forceinline__ void chain_right(T (&acc)[2][2], SmemTile<T>& rhs, SmemTile<T>& inner,
                                            const T (&part)[2][2], F value) {
  store_patch(inner, part);
  fill_tile(rhs, value);
  __syncthreads();
  tile_mma(acc, inner, rhs);
  __syncthreads();
}

// Write this thread's patch of the block tile at (row0, col0) through out(row, col, value),
// skipping entries past (rows, cols).
template <typename T, typename F>
__device__ __forceinline__ void write_patch(const T (&acc)[2][2], int64_t row0, int64_t col0, int64_t rows,
                                            int64_t cols, F out) {
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 2; ++c) {
      const int64_t row = row0 + threadIdx.y + kTileThreads * r, col = col0 + threadIdx.x + kTileThreads * c;
      if (row < rows && col < cols) out(row, col, acc[r][c]);
    }
  }
}

}  // namespace detail
}  // namespace expandnets
