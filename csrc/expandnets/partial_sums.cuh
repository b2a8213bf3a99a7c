// The last step of a split reduction: out[e] = sum over splits of partial[split, e], in split
// order, so the result does not depend on scheduling (deterministic, no atomics).
#pragma once

#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

constexpr int kElementwiseThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kElementwiseThreads)
    sum_partials_kernel(const acc_t<T>* __restrict__ partial, int64_t splits, int64_t length, T* __restrict__ out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < length; e += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> v = acc_t<T>(0);
    for (int64_t split = 0; split < splits; ++split) v += partial[split * length + e];
    out[e] = from_acc<T>(v);
  }
}

}  // namespace detail
}  // namespace expandnets
