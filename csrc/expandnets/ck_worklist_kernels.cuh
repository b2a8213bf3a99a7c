// The CK work-list kernels (launched from ck_worklist_launch.cuh): one block per item of one kind
// over all folds; the block finds its fold, then its tap and tile within the fold, and runs the
// one-fold kernels' tile (ck_kernels.cuh).
#pragma once

#include "expandnets/ck_kernels.cuh"
#include "expandnets/ck_worklist.h"

namespace expandnets {
namespace detail {

static_assert(kCkWorkTile == kTile, "work items are the fold kernels' tiles");

// The fold that owns `item` of `kind`: the last one whose first item is at or before it (folds
// without items of that kind start where the next one does, so they are never picked).
template <typename T>
__device__ __forceinline__ const CkWorkPair<T>& find_pair(const CkWorkPair<T>* pairs, int64_t n_pairs, int kind,
                                                          int64_t item) {
  int64_t lo = 0, hi = n_pairs - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (pairs[mid].item_begin[kind] <= item) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return pairs[lo];
}

// The fold-local item `local` as (tap, first row, first column) with the column tile fastest.
struct CkTileIndex {
  int64_t tap, y0, x0;
};
__device__ __forceinline__ CkTileIndex ck_tile_index(int64_t local, int64_t rows, int64_t cols) {
  const int64_t tiles_x = ceil_div(cols, kTile), tiles_y = ceil_div(rows, kTile);
  const int64_t x = local % tiles_x, rest = local / tiles_x;
  return {rest / tiles_y, (rest % tiles_y) * kTile, x * kTile};
}

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_worklist_forward_kernel(const CkWorkPair<T>* __restrict__ pairs, int64_t n_pairs, T* __restrict__ k) {
  const int64_t item = blockIdx.x;
  const CkWorkPair<T>& p = find_pair(pairs, n_pairs, kCkWorkForward, item);
  const CkShape& s = p.shape;
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  const CkTileIndex at = ck_tile_index(item - p.item_begin[kCkWorkForward], s.o, s.i);
  const int64_t wy = at.tap / kw, wx = at.tap % kw;
  T* out = k + p.k_at;
  ck_forward_tile(p.later, p.earlier, s, wy, wx, at.y0, at.x0,
                  [&](int64_t o, int64_t i, T v) { out[((o * s.i + i) * kh + wy) * kw + wx] = v; });
}

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_worklist_later_kernel(const CkWorkPair<T>* __restrict__ pairs, int64_t n_pairs, T* __restrict__ d_later) {
  const int64_t item = blockIdx.x;
  const CkWorkPair<T>& p = find_pair(pairs, n_pairs, kCkWorkLater, item);
  const CkShape& s = p.shape;
  const CkTileIndex at = ck_tile_index(item - p.item_begin[kCkWorkLater], s.o, s.c);
  const int64_t vy = at.tap / s.a2, vx = at.tap % s.a2;
  T* out = d_later + p.later_at;
  ck_later_tile(p.grad, p.earlier, s, vy, vx, at.y0, at.x0,
                [&](int64_t o, int64_t c, T v) { out[((o * s.c + c) * s.a + vy) * s.a2 + vx] = v; });
}

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_worklist_earlier_kernel(const CkWorkPair<T>* __restrict__ pairs, int64_t n_pairs, T* __restrict__ d_earlier) {
  const int64_t item = blockIdx.x;
  const CkWorkPair<T>& p = find_pair(pairs, n_pairs, kCkWorkEarlier, item);
  const CkShape& s = p.shape;
  const CkTileIndex at = ck_tile_index(item - p.item_begin[kCkWorkEarlier], s.c, s.i);
  const int64_t uy = at.tap / s.b2, ux = at.tap % s.b2;
  T* out = d_earlier + p.earlier_at;
  ck_earlier_tile(p.grad, p.later, s, uy, ux, at.y0, at.x0,
                  [&](int64_t c, int64_t i, T v) { out[((c * s.i + i) * s.b + uy) * s.b2 + ux] = v; });
}

}  // namespace detail
}  // namespace expandnets
