// The CK folds of many units at one fold level in a fixed number of launches (a work list): each
// fold (later, earlier) is a descriptor in one device array, every launch covers the items (32x32
// tiles of one output tap) of all folds back to back, and each block finds its fold by a binary
// search over the folds' first items. The tile math is the one-fold kernels' (ck_kernels.cuh).
// Plain CUDA C++: raw pointers, sizes and the stream; scalar types float and double. Results go to
// flat buffers, one per kind (K; d later, d earlier), each fold's slice at an offset
// ck_worklist_plan assigns (folds in order, slices back to back), so a table built once for a set
// of operand pointers serves every step where they stay the same, with no host-to-device copy.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "expandnets/compose.h"

namespace expandnets {

// What a launch computes; every kind has its own item numbering.
enum CkWorkKind : int {
  kCkWorkForward = 0,  // 32x32 tiles of (o, i) per tap of K
  kCkWorkLater,        // 32x32 tiles of (o, c) per tap of d later
  kCkWorkEarlier,      // 32x32 tiles of (c, i) per tap of d earlier
  kCkWorkKinds
};

// Tile width of the items (compose_tile.cuh's kTile).
constexpr int64_t kCkWorkTile = 32;

// One fold: later (o, c, a, a2), earlier (c, i, b, b2) and, for the backward, grad (o, i,
// a + b - 1, a2 + b2 - 1) (null in a forward-only table), in compose.h's layouts; its shape; and
// what ck_worklist_plan fills in: its slices' element offsets in the flat buffers and its first
// item of every kind.
template <typename T>
struct CkWorkPair {
  const T *later, *earlier, *grad;
  CkShape shape;
  int64_t k_at, later_at, earlier_at;
  int64_t item_begin[kCkWorkKinds];
};

// Lengths of the flat buffers and the number of items (blocks) of every kind, over all folds.
struct CkWorkTotals {
  int64_t k, later, earlier;
  int64_t items[kCkWorkKinds];
};

// Items of one kind for one fold.
inline int64_t ck_work_items(const CkShape& s, int kind) {
  const auto tiles = [](int64_t n) { return (n + kCkWorkTile - 1) / kCkWorkTile; };
  switch (kind) {
    case kCkWorkForward: return (s.a + s.b - 1) * (s.a2 + s.b2 - 1) * tiles(s.o) * tiles(s.i);
    case kCkWorkLater: return s.a * s.a2 * tiles(s.o) * tiles(s.c);
    case kCkWorkEarlier: return s.b * s.b2 * tiles(s.c) * tiles(s.i);
    default: return 0;
  }
}

// Host side: assigns every fold its slices and item ranges (in order, back to back); the totals.
template <typename T>
inline CkWorkTotals ck_worklist_plan(CkWorkPair<T>* pairs, int64_t n_pairs) {
  CkWorkTotals total{};
  const auto take = [](int64_t& end, int64_t n) {
    const int64_t at = end;
    end += n;
    return at;
  };
  for (int64_t p = 0; p < n_pairs; ++p) {
    CkWorkPair<T>& pair = pairs[p];
    const CkShape& s = pair.shape;
    pair.k_at = take(total.k, s.o * s.i * (s.a + s.b - 1) * (s.a2 + s.b2 - 1));
    pair.later_at = take(total.later, s.o * s.c * s.a * s.a2);
    pair.earlier_at = take(total.earlier, s.c * s.i * s.b * s.b2);
    for (int k = 0; k < kCkWorkKinds; ++k) pair.item_begin[k] = take(total.items[k], ck_work_items(s, k));
  }
  return total;
}

// K (flat, total.k) of every fold: one launch. `pairs` is the planned table in device memory.
template <typename T>
cudaError_t ck_worklist_forward(const CkWorkPair<T>* pairs, int64_t n_pairs, const CkWorkTotals& total, T* k,
                                cudaStream_t stream);

// d later (flat, total.later) and d earlier (flat, total.earlier) of every fold from each fold's
// grad (the table's grad pointers): two launches, independent of each other.
template <typename T>
cudaError_t ck_worklist_backward(const CkWorkPair<T>* pairs, int64_t n_pairs, const CkWorkTotals& total,
                                 T* d_later, T* d_earlier, cudaStream_t stream);

}  // namespace expandnets
