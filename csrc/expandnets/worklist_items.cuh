// What every work-list kernel does first: find the entry (unit or fold) that owns its item, then
// split the entry-local item into (outer index, tile row, tile column). Shared by the CL/FC
// (worklist_kernels.cuh) and the CK (ck_worklist_kernels.cuh) work lists.
#pragma once

#include <cstdint>

#include "expandnets/compose_tile.cuh"
#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

// The entry that owns `item` of `kind`: the last one whose first item is at or before it (entries
// without items of that kind start where the next one does, so they are never picked). `Entry`
// has `item_begin[kind]`, nondecreasing over the entries.
template <typename Entry>
__device__ __forceinline__ const Entry& find_owner(const Entry* entries, int64_t n_entries, int kind, int64_t item) {
  int64_t lo = 0, hi = n_entries - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (entries[mid].item_begin[kind] <= item) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return entries[lo];
}

// The entry-local item `local` as (outer, first row, first column) with the column tile fastest.
struct TileIndex {
  int64_t outer, y0, x0;
};
__device__ __forceinline__ TileIndex tile_index(int64_t local, int64_t rows, int64_t cols) {
  const int64_t tiles_x = ceil_div(cols, kTile), tiles_y = ceil_div(rows, kTile);
  const int64_t x = local % tiles_x, rest = local / tiles_x;
  return {rest / tiles_y, (rest % tiles_y) * kTile, x * kTile};
}

}  // namespace detail
}  // namespace expandnets
