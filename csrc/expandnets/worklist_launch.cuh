// Launchers of the work-list composition (declared in worklist.h, instantiated per scalar type in
// worklist_*.cu): one 1-D launch per kind of item, each checked against the grid limit before any
// is enqueued.
#pragma once

#include <initializer_list>

#include "expandnets/worklist.h"
#include "expandnets/worklist_kernels.cuh"

namespace expandnets {
namespace detail {

inline bool work_fits(const ClWorkTotals& total, std::initializer_list<int> kinds) {
  for (const int k : kinds) {
    if (total.items[k] > kMaxGridX) return false;
  }
  return true;
}

// One block per item of `kind` (nothing to do without items).
template <typename Kernel, typename... Args>
cudaError_t launch_items(Kernel kernel, const ClWorkTotals& total, int kind, dim3 block, cudaStream_t stream,
                         Args... args) {
  if (total.items[kind] == 0) return cudaSuccess;
  kernel<<<dim3(unsigned(total.items[kind])), block, 0, stream>>>(args...);
  return cudaGetLastError();
}

inline dim3 tile_block() { return dim3(kTileThreads, kTileThreads); }
inline dim3 vector_block() { return dim3(kBiasThreads); }

}  // namespace detail

template <typename T>
cudaError_t cl_worklist_forward(const ClWorkUnit<T>* units, int64_t n, const ClWorkTotals& total, T* w, T* bias,
                                cudaStream_t stream) {
  using namespace detail;
  if (n == 0) return cudaSuccess;
  if (!work_fits(total, {kClWorkForward, kClWorkBias})) return cudaErrorInvalidConfiguration;
  const cudaError_t err = launch_items(cl_worklist_forward_kernel<T>, total, kClWorkForward, tile_block(), stream,
                                       units, n, w);
  if (err != cudaSuccess || bias == nullptr) return err;
  return launch_items(cl_worklist_bias_kernel<T>, total, kClWorkBias, vector_block(), stream, units, n, bias);
}

template <typename T>
cudaError_t cl_worklist_backward(const ClWorkUnit<T>* units, int64_t n, const ClWorkTotals& total, const T* grad_w,
                                 const T* grad_bias, T* dw1, T* dw2, T* dw3, T* db1, T* db2, T* inner,
                                 cudaStream_t stream) {
  using namespace detail;
  if (n == 0) return cudaSuccess;
  if (!work_fits(total, {kClWorkDw1, kClWorkDw2, kClWorkDw3, kClWorkBiasVectors, kClWorkDb1})) {
    return cudaErrorInvalidConfiguration;
  }
  const bool biases = grad_bias != nullptr;
  cudaError_t err = cudaSuccess;
  if (biases) {
    err = launch_items(cl_worklist_bias_vectors_kernel<T>, total, kClWorkBiasVectors, vector_block(), stream, units,
                       n, grad_bias, inner, db2);
    if (err != cudaSuccess) return err;
    err = launch_items(cl_worklist_db1_kernel<T>, total, kClWorkDb1, vector_block(), stream, units, n,
                       static_cast<const T*>(db2), db1);
    if (err != cudaSuccess) return err;
  }
  err = launch_items(cl_worklist_dw1_kernel<T>, total, kClWorkDw1, tile_block(), stream, units, n, grad_w, dw1);
  if (err != cudaSuccess) return err;
  err = launch_items(cl_worklist_dw2_kernel<T>, total, kClWorkDw2, tile_block(), stream, units, n, grad_w,
                     static_cast<const T*>(biases ? db2 : nullptr), dw2);
  if (err != cudaSuccess) return err;
  return launch_items(cl_worklist_dw3_kernel<T>, total, kClWorkDw3, tile_block(), stream, units, n, grad_w, grad_bias,
                      static_cast<const T*>(biases ? inner : nullptr), dw3);
}

}  // namespace expandnets
