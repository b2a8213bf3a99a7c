// The CUDA runtime and language surface that csrc/ uses, for host compilation under cuemu
// (tests/cuda_cpu/include/cuemu/core.h has the execution model).
#pragma once

#include <math.h>  // fma(float, float, float) and fma(double, ...) as on the device

#include <cstdint>
#include <cstring>

#include "cuemu/core.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// build.py rewrites every __shared__ declaration; one left over fails to compile here.
#define __shared__ CUEMU_SHARED_DECLARATION_NOT_REWRITTEN

#define threadIdx (::cuemu::self().thread_idx)
#define blockIdx (::cuemu::self().block_idx)
#define blockDim (::cuemu::self().block_dim)
#define gridDim (::cuemu::self().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuemu::syncthreads(); }

inline cudaError_t cudaGetLastError() { return ::cuemu::take_last_error(); }
inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}
inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t = nullptr) {
  if (bytes != 0 && ptr == nullptr) return cudaErrorInvalidValue;
  if (bytes != 0) std::memset(ptr, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

// Warp shuffles (full-warp masks only; csrc/ uses no partial masks).
namespace cuemu {
enum class ShuffleKind { index, up, down, bfly };
template <class T>
T shuffle(const char* op, ShuffleKind kind, unsigned mask, T value, int arg, int width) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffles move 4- or 8-byte values");
  if (mask != warp_full_mask()) fail("%s: mask 0x%x is not the full warp (0x%x); partial masks are not emulated", op,
                                     mask, warp_full_mask());
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) fail("%s: width %d is not a power of 2 <= 32", op, width);
  struct Lane {
    T in, out;
    int arg;
  } mine{value, value, arg};
  warp_collective(op, mine, [kind, width](Lane** lanes, int n) {
    for (int l = 0; l < n; ++l) {
      const int base = l / width * width, a = lanes[l]->arg;
      int src = l;
      switch (kind) {
        case ShuffleKind::index: src = base + ((a % width) + width) % width; break;
        case ShuffleKind::up: src = l - a >= base ? l - a : l; break;
        case ShuffleKind::down: src = l + a < base + width ? l + a : l; break;
        case ShuffleKind::bfly: src = (l ^ a) < base + width ? (l ^ a) : l; break;
      }
      lanes[l]->out = lanes[src < n ? src : l]->in;
    }
  });
  return mine.out;
}
}  // namespace cuemu

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = warpSize) {
  return ::cuemu::shuffle("__shfl_sync", ::cuemu::ShuffleKind::index, mask, v, src, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  return ::cuemu::shuffle("__shfl_up_sync", ::cuemu::ShuffleKind::up, mask, v, int(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  return ::cuemu::shuffle("__shfl_down_sync", ::cuemu::ShuffleKind::down, mask, v, int(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  return ::cuemu::shuffle("__shfl_xor_sync", ::cuemu::ShuffleKind::bfly, mask, v, lane_mask, width);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != ::cuemu::warp_full_mask()) ::cuemu::fail("__syncwarp: partial masks are not emulated");
  int dummy = 0;
  ::cuemu::warp_collective("__syncwarp", dummy, [](int**, int) {});
}

// Atomics: the threads of a block run on one OS thread and switch only at barriers, so a plain
// read-modify-write is atomic here.
template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <class T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
template <class T>
T atomicMax(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}
template <class T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline void __threadfence() {}
