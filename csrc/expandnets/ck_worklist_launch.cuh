// Launchers of the CK work list (declared in ck_worklist.h, instantiated per scalar type in
// ck_worklist_*.cu): one 1-D launch per kind of item, each checked against the grid limit before
// any is enqueued.
#pragma once

#include "expandnets/ck_worklist.h"
#include "expandnets/ck_worklist_kernels.cuh"

namespace expandnets {
namespace detail {

// One block per item of `kind` (nothing to do without items).
template <typename Kernel, typename... Args>
cudaError_t launch_ck_items(Kernel kernel, const CkWorkTotals& total, int kind, cudaStream_t stream, Args... args) {
  if (total.items[kind] == 0) return cudaSuccess;
  kernel<<<dim3(unsigned(total.items[kind])), dim3(kTileThreads, kTileThreads), 0, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace detail

template <typename T>
cudaError_t ck_worklist_forward(const CkWorkPair<T>* pairs, int64_t n, const CkWorkTotals& total, T* k,
                                cudaStream_t stream) {
  using namespace detail;
  if (n == 0) return cudaSuccess;
  if (total.items[kCkWorkForward] > kMaxGridX) return cudaErrorInvalidConfiguration;
  return launch_ck_items(ck_worklist_forward_kernel<T>, total, kCkWorkForward, stream, pairs, n, k);
}

template <typename T>
cudaError_t ck_worklist_backward(const CkWorkPair<T>* pairs, int64_t n, const CkWorkTotals& total, T* d_later,
                                 T* d_earlier, cudaStream_t stream) {
  using namespace detail;
  if (n == 0) return cudaSuccess;
  if (total.items[kCkWorkLater] > kMaxGridX || total.items[kCkWorkEarlier] > kMaxGridX) {
    return cudaErrorInvalidConfiguration;
  }
  const cudaError_t err = launch_ck_items(ck_worklist_later_kernel<T>, total, kCkWorkLater, stream, pairs, n, d_later);
  if (err != cudaSuccess) return err;
  return launch_ck_items(ck_worklist_earlier_kernel<T>, total, kCkWorkEarlier, stream, pairs, n, d_earlier);
}

}  // namespace expandnets
