// The CK work-list kernels (launched from ck_worklist_launch.cuh): one block per item of one kind
// over all folds; the block finds its fold, then its tap and tile within the fold, and runs the
// one-fold kernels' tile (ck_kernels.cuh).
#pragma once

#include "expandnets/ck_kernels.cuh"
#include "expandnets/ck_worklist.h"
#include "expandnets/worklist_items.cuh"

namespace expandnets {
namespace detail {

static_assert(kCkWorkTile == kTile, "work items are the fold kernels' tiles");

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_worklist_forward_kernel(const CkWorkPair<T>* __restrict__ pairs, int64_t n_pairs, T* __restrict__ k) {
  const int64_t item = blockIdx.x;
  const CkWorkPair<T>& p = find_owner(pairs, n_pairs, kCkWorkForward, item);
  const CkShape& s = p.shape;
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  const TileIndex at = tile_index(item - p.item_begin[kCkWorkForward], s.o, s.i);
  const int64_t wy = at.outer / kw, wx = at.outer % kw;
  T* out = k + p.k_at;
  ck_forward_tile(p.later, p.earlier, s, wy, wx, at.y0, at.x0,
                  [&](int64_t o, int64_t i, T v) { out[((o * s.i + i) * kh + wy) * kw + wx] = v; });
}

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_worklist_later_kernel(const CkWorkPair<T>* __restrict__ pairs, int64_t n_pairs, T* __restrict__ d_later) {
  const int64_t item = blockIdx.x;
  const CkWorkPair<T>& p = find_owner(pairs, n_pairs, kCkWorkLater, item);
  const CkShape& s = p.shape;
  const TileIndex at = tile_index(item - p.item_begin[kCkWorkLater], s.o, s.c);
  const int64_t vy = at.outer / s.a2, vx = at.outer % s.a2;
  T* out = d_later + p.later_at;
  ck_later_tile(p.grad, p.earlier, s, vy, vx, at.y0, at.x0,
                [&](int64_t o, int64_t c, T v) { out[((o * s.c + c) * s.a + vy) * s.a2 + vx] = v; });
}

template <typename T>
__global__ void __launch_bounds__(kTileThreads* kTileThreads, kTileMinBlocks)
    ck_worklist_earlier_kernel(const CkWorkPair<T>* __restrict__ pairs, int64_t n_pairs, T* __restrict__ d_earlier) {
  const int64_t item = blockIdx.x;
  const CkWorkPair<T>& p = find_owner(pairs, n_pairs, kCkWorkEarlier, item);
  const CkShape& s = p.shape;
  const TileIndex at = tile_index(item - p.item_begin[kCkWorkEarlier], s.c, s.i);
  const int64_t uy = at.outer / s.b2, ux = at.outer % s.b2;
  T* out = d_earlier + p.earlier_at;
  ck_earlier_tile(p.grad, p.later, s, uy, ux, at.y0, at.x0,
                  [&](int64_t c, int64_t i, T v) { out[((c * s.i + i) * s.b + uy) * s.b2 + ux] = v; });
}

}  // namespace detail
}  // namespace expandnets
