// The CL/FC composition of many units of *different* shapes in a fixed number of launches (a
// work list): the units' descriptors sit in one device array, every launch covers the items (tiles
// of one kind) of all units back to back, and each block finds its unit by a binary search over the
// units' first items. The tile math is the per-shape composition's (compose.h, cl_tiles.cuh).
// Plain CUDA C++: raw pointers, sizes and the stream; scalar types float and double. Results go to
// flat buffers, one per kind, each unit's slice at an offset cl_worklist_plan assigns (units in
// order, slices back to back); so a table built once for a set of units serves every step where
// their input pointers stay the same, with no per-step host-to-device copy.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "expandnets/compose.h"

namespace expandnets {

// What a launch computes; every kind has its own item numbering.
enum ClWorkKind : int {
  kClWorkForward = 0,    // 32x32 tiles of W per (group, tap)
  kClWorkBias,           // 256 entries of the folded bias per group
  kClWorkDw1,            // 32x32 tiles of dW1 per group
  kClWorkDw2,            // 32x32 tiles of dW2 per (group, tap)
  kClWorkDw3,            // 32x32 tiles of dW3 per group
  kClWorkBiasVectors,    // 256 entries of the bias fold's inner vector and of its gradient (db2) per group
  kClWorkDb1,            // 256 entries of db1 per group
  kClWorkKinds
};

// Tile and vector widths of the items (cl_tiles.cuh's kTile and kBiasThreads).
constexpr int64_t kClWorkTile = 32, kClWorkVector = 256;

// One unit: its inputs in compose.h's layouts, w1 (groups, a, i), w2 (groups, c, a, taps),
// w3 (groups, o, c), b1 (groups, a), b2 (groups, c), b3 (groups, o) (the biases all null for a
// unit without), its shape, and what cl_worklist_plan fills in: the element offsets of its slices
// in the flat buffers and its first item of every kind.
template <typename T>
struct ClWorkUnit {
  const T *w1, *w2, *w3, *b1, *b2, *b3;
  ClShape shape;
  int64_t w_at;                  // W and its gradient: groups * o * i * taps
  int64_t bias_at;               // the bias and its gradient: groups * o
  int64_t w1_at, w2_at, w3_at;   // dW1, dW2, dW3: as large as w1, w2, w3
  int64_t a_at, c_at;            // db1: groups * a; the inner vector and db2: groups * c
  int64_t item_begin[kClWorkKinds];
};

// Lengths of the flat buffers and the number of items (blocks) of every kind, over all units.
struct ClWorkTotals {
  int64_t w, bias, w1, w2, w3, a, c;
  int64_t items[kClWorkKinds];
};

// Items of one kind for one unit.
inline int64_t cl_work_items(const ClShape& s, int kind) {
  const auto tiles = [](int64_t n) { return (n + kClWorkTile - 1) / kClWorkTile; };
  const auto vectors = [](int64_t n) { return (n + kClWorkVector - 1) / kClWorkVector; };
  switch (kind) {
    case kClWorkForward: return s.groups * s.taps * tiles(s.o) * tiles(s.i);
    case kClWorkBias: return s.groups * vectors(s.o);
    case kClWorkDw1: return s.groups * tiles(s.a) * tiles(s.i);
    case kClWorkDw2: return s.groups * s.taps * tiles(s.c) * tiles(s.a);
    case kClWorkDw3: return s.groups * tiles(s.o) * tiles(s.c);
    case kClWorkBiasVectors: return s.groups * vectors(s.c);
    case kClWorkDb1: return s.groups * vectors(s.a);
    default: return 0;
  }
}

// Host side: assigns every unit its slices and item ranges (in order, back to back); the totals.
template <typename T>
inline ClWorkTotals cl_worklist_plan(ClWorkUnit<T>* units, int64_t n_units) {
  ClWorkTotals total{};
  const auto take = [](int64_t& end, int64_t n) {
    const int64_t at = end;
    end += n;
    return at;
  };
  for (int64_t u = 0; u < n_units; ++u) {
    ClWorkUnit<T>& unit = units[u];
    const ClShape& s = unit.shape;
    unit.w_at = take(total.w, s.groups * s.o * s.i * s.taps);
    unit.bias_at = take(total.bias, s.groups * s.o);
    unit.w1_at = take(total.w1, s.groups * s.a * s.i);
    unit.w2_at = take(total.w2, s.groups * s.c * s.a * s.taps);
    unit.w3_at = take(total.w3, s.groups * s.o * s.c);
    unit.a_at = take(total.a, s.groups * s.a);
    unit.c_at = take(total.c, s.groups * s.c);
    for (int k = 0; k < kClWorkKinds; ++k) unit.item_begin[k] = take(total.items[k], cl_work_items(s, k));
  }
  return total;
}

// W (flat, total.w) of every unit, and with `bias` non-null (the units have biases) the folded
// bias (flat, total.bias): one launch each. `units` is the planned table in device memory.
template <typename T>
cudaError_t cl_worklist_forward(const ClWorkUnit<T>* units, int64_t n_units, const ClWorkTotals& total, T* w,
                                T* bias, cudaStream_t stream);

// The gradients of every unit's inputs from grad_w (flat, total.w) and, with biases, grad_bias
// (flat, total.bias): dw1, dw2, dw3 (total.w1, .w2, .w3); with biases also db1 (total.a), db2
// (total.c) and `inner` (total.c, scratch: the bias fold's inner vector); db3 is grad_bias itself.
// Three launches without biases, five with (the bias vectors and db1 first, then the three
// weight-gradient tiles, which add the bias fold's rank-1 terms to dW2 and dW3).
template <typename T>
cudaError_t cl_worklist_backward(const ClWorkUnit<T>* units, int64_t n_units, const ClWorkTotals& total,
                                 const T* grad_w, const T* grad_bias, T* dw1, T* dw2, T* dw3, T* db1, T* db2,
                                 T* inner, cudaStream_t stream);

}  // namespace expandnets
