// Launchers of the chain kernels (declared in chain.h, instantiated per scalar type in chain_*.cu),
// the split rule of the backward's weight-gradient reductions and the workspace layout.
#pragma once

#include "expandnets/chain.h"
#include "expandnets/chain_kernels.cuh"
#include "expandnets/partial_sums.cuh"

namespace expandnets {
namespace detail {

// The pixel reduction of the weight gradients runs in at most this many fixed splits, each with a
// partial buffer, and the partial buffers of one weight stay within this many elements.
constexpr int64_t kChainMaxSplits = 64;
constexpr int64_t kChainPartialBudget = int64_t(1) << 25;

struct ChainSplits {
  int64_t splits, per_split;  // per_split: pixel tiles of one split
};

inline ChainSplits chain_splits(int64_t tiles, int64_t weight_elems) {
  int64_t splits = tiles < kChainMaxSplits ? tiles : kChainMaxSplits;
  const int64_t cap = kChainPartialBudget / (weight_elems > 0 ? weight_elems : 1);
  splits = splits < cap ? splits : cap;
  splits = splits < 1 ? 1 : splits;
  const int64_t per = ceil_div(tiles > 0 ? tiles : 1, splits);
  return {ceil_div(tiles > 0 ? tiles : 1, per), per};
}

inline bool chain_pointwise1(const ChainShape& s) { return s.k1h * s.k1w == 1; }

// Offsets (in accumulator elements, each 16-byte aligned) of the backward's scratch buffers.
struct ChainWorkspace {
  ChainSplits out, in;
  int64_t dw3, db2, dw1, db1, dw2, dz2, grad1, total;
};

template <typename T>
ChainWorkspace chain_workspace(const ChainShape& s) {
  const int64_t align = 16 / int64_t(sizeof(acc_t<T>));
  const int64_t taps = s.kh * s.kw, k1 = s.mg * s.k1h * s.k1w, g = s.groups;
  const bool l3 = s.o > 0;
  ChainWorkspace w{};
  w.out = chain_splits(ceil_div(s.batch * s.out_h * s.out_w, kChainPixels), g * s.o * s.c);
  w.in = chain_splits(ceil_div(s.batch * s.h1 * s.w1, kChainPixels), g * s.c * s.a * taps + g * s.a * k1);
  int64_t at = 0;
  const auto take = [&](int64_t n) {
    const int64_t here = at;
    at += ceil_div(n, align) * align;
    return here;
  };
  w.dw3 = take(l3 ? w.out.splits * g * s.o * s.c : 0);
  w.db2 = take(l3 ? w.out.splits * g * s.c : 0);
  w.dw1 = take(w.in.splits * g * s.a * k1);
  w.db1 = take(w.in.splits * g * s.a);
  w.dw2 = take(w.in.splits * g * s.c * s.a * taps);
  w.dz2 = take(l3 ? s.batch * g * s.c * s.out_h * s.out_w : 0);
  w.grad1 = take(chain_pointwise1(s) ? s.batch * g * s.mg * s.height * s.width : s.batch * g * s.a * s.h1 * s.w1);
  w.total = at;
  return w;
}

template <typename T>
cudaError_t chain_sum_partials(const acc_t<T>* partial, int64_t splits, int64_t length, T* out, cudaStream_t stream) {
  if (length == 0 || out == nullptr) return cudaSuccess;
  const int64_t blocks = ceil_div(length, kElementwiseThreads);
  sum_partials_kernel<T><<<unsigned(blocks < 4096 ? blocks : 4096), kElementwiseThreads, 0, stream>>>(
      partial, splits, length, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t chain_channel_sum(const T* dy, Strides4 dys, const ChainShape& s, int64_t channels, T* out,
                              cudaStream_t stream) {
  if (channels == 0 || out == nullptr) return cudaSuccess;
  if (!grid_fits(channels, 1, 1)) return cudaErrorInvalidConfiguration;
  chain_channel_sum_kernel<T><<<unsigned(channels), kChainThreads, 0, stream>>>(dy, dys, s.batch, s.out_h, s.out_w, out);
  return cudaGetLastError();
}

}  // namespace detail

template <typename T>
cudaError_t chain_forward(const T* x, Strides4 x_strides, const T* w1, const T* b1, const T* w2, const T* b2,
                          const T* w3, const T* b3, T* y, Strides4 y_strides, const ChainShape& s,
                          cudaStream_t stream) {
  using namespace detail;
  const ChainArgs<T> args{x, x_strides, w1, b1, w2, b2, w3, b3, s};
  const int64_t tiles = ceil_div(s.batch * s.out_h * s.out_w, kChainPixels);
  const int64_t chunks = ceil_div(s.o > 0 ? s.o : s.c, kChainWidth);
  if (tiles == 0 || chunks == 0 || s.groups == 0) return cudaSuccess;
  if (!grid_fits(tiles, chunks, s.groups)) return cudaErrorInvalidConfiguration;
  chain_forward_kernel<T><<<dim3(unsigned(tiles), unsigned(chunks), unsigned(s.groups)), kChainThreads, 0, stream>>>(
      args, y, y_strides);
  return cudaGetLastError();
}

template <typename T>
size_t chain_backward_workspace_bytes(const ChainShape& s) {
  return size_t(detail::chain_workspace<T>(s).total) * sizeof(detail::acc_t<T>);
}

template <typename T>
cudaError_t chain_backward(const T* dy, Strides4 dy_strides, const T* x, Strides4 x_strides, const T* w1,
                           const T* b1, const T* w2, const T* b2, const T* w3, T* dx, Strides4 dx_strides, T* dw1,
                           T* db1, T* dw2, T* db2, T* dw3, T* db3, void* workspace, const ChainShape& s,
                           cudaStream_t stream) {
  using namespace detail;
  using A = acc_t<T>;
  const ChainArgs<T> args{x, x_strides, w1, b1, w2, b2, w3, nullptr, s};
  const ChainWorkspace ws = chain_workspace<T>(s);
  A* base = static_cast<A*>(workspace);
  const int64_t g = s.groups, taps = s.kh * s.kw, k1 = s.mg * s.k1h * s.k1w;
  const bool pointwise = chain_pointwise1(s);
  if (s.batch == 0 || g == 0) return cudaSuccess;
  if (!grid_fits(ws.out.splits, ceil_div(s.c, kChainWidth), g) || !grid_fits(ws.in.splits, g, 1) ||
      !grid_fits(ceil_div(s.batch * s.height * s.width, kChainPixels), ceil_div(s.mg, kChainWidth), 1)) {
    return cudaErrorInvalidConfiguration;
  }
  // The partials (and the dx accumulator) are read-add-written: start them at zero.
  cudaError_t err = cudaMemsetAsync(base, 0, size_t(ws.dz2) * sizeof(A), stream);
  if (err == cudaSuccess && pointwise) err = cudaMemsetAsync(base + ws.grad1, 0, size_t(ws.total - ws.grad1) * sizeof(A), stream);
  if (err != cudaSuccess) return err;
  if (s.o > 0) {
    const int64_t tiles = ceil_div(s.batch * s.out_h * s.out_w, kChainPixels);
    chain_backward_out_kernel<T><<<dim3(unsigned(ws.out.splits), unsigned(ceil_div(s.c, kChainWidth)), unsigned(g)),
                                   kChainThreads, 0, stream>>>(args, dy, dy_strides, base + ws.dz2, base + ws.dw3,
                                                               base + ws.db2, tiles, ws.out.per_split);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if ((err = chain_sum_partials<T>(base + ws.dw3, ws.out.splits, g * s.o * s.c, dw3, stream)) != cudaSuccess) return err;
    if (s.has_bias) {
      if ((err = chain_sum_partials<T>(base + ws.db2, ws.out.splits, g * s.c, db2, stream)) != cudaSuccess) return err;
      if ((err = chain_channel_sum<T>(dy, dy_strides, s, g * s.o, db3, stream)) != cudaSuccess) return err;
    }
    const Strides4 dz2_strides{g * s.c * s.out_h * s.out_w, s.out_h * s.out_w, s.out_w, 1};
    chain_backward_in_kernel<T, A><<<dim3(unsigned(ws.in.splits), unsigned(g)), kChainThreads, 0, stream>>>(
        args, base + ws.dz2, dz2_strides, base + ws.grad1, base + ws.dw1, base + ws.db1,
        base + ws.dw2, ceil_div(s.batch * s.h1 * s.w1, kChainPixels), ws.in.per_split);
  } else {
    if (s.has_bias && (err = chain_channel_sum<T>(dy, dy_strides, s, g * s.c, db2, stream)) != cudaSuccess) return err;
    chain_backward_in_kernel<T, T><<<dim3(unsigned(ws.in.splits), unsigned(g)), kChainThreads, 0, stream>>>(
        args, dy, dy_strides, base + ws.grad1, base + ws.dw1, base + ws.db1, base + ws.dw2,
        ceil_div(s.batch * s.h1 * s.w1, kChainPixels), ws.in.per_split);
  }
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if ((err = chain_sum_partials<T>(base + ws.dw1, ws.in.splits, g * s.a * k1, dw1, stream)) != cudaSuccess) return err;
  if (s.has_bias && (err = chain_sum_partials<T>(base + ws.db1, ws.in.splits, g * s.a, db1, stream)) != cudaSuccess) {
    return err;
  }
  if ((err = chain_sum_partials<T>(base + ws.dw2, ws.in.splits, g * s.c * s.a * taps, dw2, stream)) != cudaSuccess) {
    return err;
  }
  if (pointwise) {
    const int64_t total = s.batch * g * s.mg * s.height * s.width;
    const int64_t blocks = ceil_div(total, kChainThreads);
    if (total == 0) return cudaSuccess;
    chain_store_dx_kernel<T><<<unsigned(blocks < 65535 ? blocks : 65535), kChainThreads, 0, stream>>>(
        base + ws.grad1, dx, dx_strides, s.batch, g * s.mg, s.height, s.width);
  } else {
    const int64_t tiles = ceil_div(s.batch * s.height * s.width, kChainPixels);
    if (tiles == 0) return cudaSuccess;
    chain_dgrad1_kernel<T><<<dim3(unsigned(tiles), unsigned(ceil_div(s.mg, kChainWidth))), kChainThreads, 0, stream>>>(
        base + ws.grad1, w1, dx, dx_strides, s);
  }
  return cudaGetLastError();
}

}  // namespace expandnets
