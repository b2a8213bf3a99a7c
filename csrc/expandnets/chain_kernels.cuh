// The chain kernels (declared through chain.h's launchers): a tile of 16 pixels x 32 channels per
// step, 128 threads, each thread owning one channel column and four pixel rows of the tile. Two
// shared-memory tiles (16 x 33 and 32 x 33, padded so column walks are conflict-free) carry the
// operands; the expanded intermediates (the layer-1 tile each layer-2 tap reads, the layer-2
// tile) live only there and in registers. Layer 1 is recomputed per layer-2 tap (it costs about
// 1/r of the layer-2 work), which keeps shared memory at ~13 KB in float64 whatever the widths.
// The tile kernels declare one block per SM as their minimum (__launch_bounds__(128, 1)): without
// it ptxas capped sm_80 at 96-128 registers and spilled; with it no kernel spills (ptxas -v).
#pragma once

#include "expandnets/chain.h"
#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

constexpr int kChainThreads = 128;
constexpr int kChainPixels = 16;                                   // tile rows (pixels)
constexpr int kChainWidth = 32;                                    // tile columns (channels)
constexpr int kChainPitch = kChainWidth + 1;                       // shared row pitch
constexpr int kChainRows = kChainPixels * kChainWidth / kChainThreads;  // 4 rows per thread
constexpr int kChainRowStep = kChainThreads / kChainWidth;         // a thread's rows are 4 apart
constexpr int kChainSquare = kChainWidth * kChainWidth / kChainThreads;  // 8 elements of a 32x32 tile

__device__ __forceinline__ int chain_col() { return int(threadIdx.x) % kChainWidth; }
__device__ __forceinline__ int chain_row(int r) { return int(threadIdx.x) / kChainWidth + kChainRowStep * r; }
// Element e of this thread in a 32 x 32 tile: (e_row, e_col).
__device__ __forceinline__ int square_row(int e) { return (int(threadIdx.x) + e * kChainThreads) / kChainWidth; }
__device__ __forceinline__ int square_col(int e) { return (int(threadIdx.x) + e * kChainThreads) % kChainWidth; }

// acc[r] += sum_k rows[row_r][k] * other[col][k]  (other holds the output column's row): the
// k loop outside, so each shared value is read once for the thread's four rows.
template <typename A>
__device__ __forceinline__ void tile_dot_nt(A (&acc)[kChainRows], const A (*rows)[kChainPitch],
                                            const A (*other)[kChainPitch]) {
#pragma unroll 4
  for (int k = 0; k < kChainWidth; ++k) {
    const A w = other[chain_col()][k];
#pragma unroll
    for (int r = 0; r < kChainRows; ++r) acc[r] += rows[chain_row(r)][k] * w;
  }
}

// acc[r] += sum_k rows[row_r][k] * other[k][col].
template <typename A>
__device__ __forceinline__ void tile_dot_nn(A (&acc)[kChainRows], const A (*rows)[kChainPitch],
                                            const A (*other)[kChainPitch]) {
#pragma unroll 4
  for (int k = 0; k < kChainWidth; ++k) {
    const A w = other[k][chain_col()];
#pragma unroll
    for (int r = 0; r < kChainRows; ++r) acc[r] += rows[chain_row(r)][k] * w;
  }
}

template <typename T>
struct ChainArgs {
  const T* x;
  Strides4 xs;
  const T* w1;
  const T* b1;
  const T* w2;
  const T* b2;
  const T* w3;
  const T* b3;
  ChainShape s;
};

// The tile's pixels: image n, row, column in some grid, and whether the pixel exists.
struct TilePixels {
  int64_t n[kChainPixels], row[kChainPixels], col[kChainPixels];
  bool ok[kChainPixels];
};

// Fills `tp` for tile `tile` of a (batch x rows x cols) grid; the caller synchronises.
__device__ __forceinline__ void load_tile_pixels(TilePixels& tp, int64_t tile, int64_t batch, int64_t rows,
                                                 int64_t cols) {
  if (threadIdx.x < kChainPixels) {
    const int t = int(threadIdx.x);
    int64_t index = tile * kChainPixels + t;
    const bool ok = index < batch * rows * cols;
    index = ok ? index : 0;
    tp.ok[t] = ok;
    tp.n[t] = index / (rows * cols);
    tp.row[t] = index % (rows * cols) / cols;
    tp.col[t] = index % cols;
  }
}

template <typename A>
__device__ __forceinline__ A act(A z, bool relu) {
  return relu && z < A(0) ? A(0) : z;
}

template <typename A>
__device__ __forceinline__ A act_grad(A dh, A z, bool relu) {
  return relu && !(z > A(0)) ? A(0) : dh;
}

// The 16 x 32 implicit-im2col tile of the input at layer-1 positions (row * mh + ah, col * mw + aw)
// of the padded frame, reduction indices k0.. (input channel x layer-1 tap).
template <typename T>
__device__ __forceinline__ void load_x_tile(const ChainArgs<T>& args, const TilePixels& tp, int64_t mh, int64_t ah,
                                            int64_t mw, int64_t aw, int64_t g, int64_t k0,
                                            acc_t<T> (*tile)[kChainPitch]) {
  const ChainShape& s = args.s;
  const int64_t taps1 = s.k1h * s.k1w, k1 = s.mg * taps1;
  const int64_t k = k0 + chain_col();
  #pragma unroll
  for (int r = 0; r < kChainRows; ++r) {
    const int row = chain_row(r);
    acc_t<T> v = acc_t<T>(0);
    if (tp.ok[row] && k < k1) {
      const int64_t channel = k / taps1, tap = k % taps1;
      const int64_t h = tp.row[row] * mh + ah + (tap / s.k1w) * s.d1h - s.pad_top;
      const int64_t w = tp.col[row] * mw + aw + (tap % s.k1w) * s.d1w - s.pad_left;
      if (h >= 0 && h < s.height && w >= 0 && w < s.width) {
        v = to_acc(args.x[tp.n[row] * args.xs.n + (g * s.mg + channel) * args.xs.c + h * args.xs.h + w * args.xs.w]);
      }
    }
    tile[row][chain_col()] = v;
  }
}

// z1 = W1 x + b1 for layer-1 channels a0 + column at the tile's positions (see load_x_tile).
// Uses both shared tiles; returns with them free.
template <typename T>
__device__ void layer1_tile(const ChainArgs<T>& args, const TilePixels& tp, int64_t mh, int64_t ah, int64_t mw,
                            int64_t aw, int64_t g, int64_t a0, acc_t<T> (*small)[kChainPitch],
                            acc_t<T> (*square)[kChainPitch], acc_t<T> (&z)[kChainRows]) {
  const ChainShape& s = args.s;
  const int64_t k1 = s.mg * s.k1h * s.k1w;
  #pragma unroll
  for (int r = 0; r < kChainRows; ++r) z[r] = acc_t<T>(0);
  for (int64_t k0 = 0; k0 < k1; k0 += kChainWidth) {
    load_x_tile(args, tp, mh, ah, mw, aw, g, k0, small);
    #pragma unroll
    for (int e = 0; e < kChainSquare; ++e) {
      const int64_t a = a0 + square_row(e), k = k0 + square_col(e);
      square[square_row(e)][square_col(e)] = a < s.a && k < k1 ? to_acc(args.w1[(g * s.a + a) * k1 + k]) : acc_t<T>(0);
    }
    __syncthreads();
        tile_dot_nt(z, small, square);
    __syncthreads();
  }
  if (s.has_bias && a0 + chain_col() < s.a) {
    const acc_t<T> bias = to_acc(args.b1[g * s.a + a0 + chain_col()]);
    #pragma unroll
    for (int r = 0; r < kChainRows; ++r) z[r] += bias;
  }
}

// z2 for layer-2 channels c0 + column at the tile's output pixels; layer 1 recomputed per tap.
template <typename T>
__device__ void layer2_tile(const ChainArgs<T>& args, const TilePixels& tp, int64_t g, int64_t c0,
                            acc_t<T> (*small)[kChainPitch], acc_t<T> (*square)[kChainPitch],
                            acc_t<T> (&z2)[kChainRows]) {
  const ChainShape& s = args.s;
  const int64_t taps = s.kh * s.kw;
  #pragma unroll
  for (int r = 0; r < kChainRows; ++r) z2[r] = acc_t<T>(0);
  for (int64_t tap = 0; tap < taps; ++tap) {
    for (int64_t a0 = 0; a0 < s.a; a0 += kChainWidth) {
      acc_t<T> z1[kChainRows];
      layer1_tile(args, tp, s.sh, (tap / s.kw) * s.dh, s.sw, (tap % s.kw) * s.dw, g, a0, small, square, z1);
      const bool real_a = a0 + chain_col() < s.a;
      #pragma unroll
      for (int r = 0; r < kChainRows; ++r) small[chain_row(r)][chain_col()] = real_a ? act(z1[r], s.relu) : acc_t<T>(0);
      #pragma unroll
      for (int e = 0; e < kChainSquare; ++e) {
        const int64_t c = c0 + square_row(e), a = a0 + square_col(e);
        square[square_row(e)][square_col(e)] =
            c < s.c && a < s.a ? to_acc(args.w2[((g * s.c + c) * s.a + a) * taps + tap]) : acc_t<T>(0);
      }
      __syncthreads();
            tile_dot_nt(z2, small, square);
      __syncthreads();
    }
  }
  if (s.has_bias && c0 + chain_col() < s.c) {
    const acc_t<T> bias = to_acc(args.b2[g * s.c + c0 + chain_col()]);
    #pragma unroll
    for (int r = 0; r < kChainRows; ++r) z2[r] += bias;
  }
}

// grid (pixel tiles, channel chunks of the output, groups).
template <typename T>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_forward_kernel(const ChainArgs<T> args, T* __restrict__ y, const Strides4 ys) {
  __shared__ TilePixels tp;
  __shared__ acc_t<T> small[kChainPixels][kChainPitch];
  __shared__ acc_t<T> square[kChainWidth][kChainPitch];
  const ChainShape& s = args.s;
  const int64_t g = blockIdx.z, chunk = int64_t(blockIdx.y) * kChainWidth;
  load_tile_pixels(tp, blockIdx.x, s.batch, s.out_h, s.out_w);
  __syncthreads();
  acc_t<T> out[kChainRows];
  int64_t channel;
  bool real;
  if (s.o > 0) {
    #pragma unroll
    for (int r = 0; r < kChainRows; ++r) out[r] = acc_t<T>(0);
    for (int64_t c0 = 0; c0 < s.c; c0 += kChainWidth) {
      acc_t<T> z2[kChainRows];
      layer2_tile(args, tp, g, c0, small, square, z2);
      const bool real_c = c0 + chain_col() < s.c;
      #pragma unroll
      for (int r = 0; r < kChainRows; ++r) small[chain_row(r)][chain_col()] = real_c ? act(z2[r], s.relu) : acc_t<T>(0);
      #pragma unroll
      for (int e = 0; e < kChainSquare; ++e) {
        const int64_t o = chunk + square_row(e), c = c0 + square_col(e);
        square[square_row(e)][square_col(e)] = o < s.o && c < s.c ? to_acc(args.w3[(g * s.o + o) * s.c + c]) : acc_t<T>(0);
      }
      __syncthreads();
            tile_dot_nt(out, small, square);
      __syncthreads();
    }
    real = chunk + chain_col() < s.o;
    channel = g * s.o + chunk + chain_col();
    if (s.has_bias && real) {
      const acc_t<T> bias = to_acc(args.b3[channel]);
      #pragma unroll
      for (int r = 0; r < kChainRows; ++r) out[r] += bias;
    }
  } else {
    layer2_tile(args, tp, g, chunk, small, square, out);
    real = chunk + chain_col() < s.c;
    channel = g * s.c + chunk + chain_col();
  }
  #pragma unroll
  for (int r = 0; r < kChainRows; ++r) {
    const int row = chain_row(r);
    if (real && tp.ok[row]) y[tp.n[row] * ys.n + channel * ys.c + tp.row[row] * ys.h + tp.col[row] * ys.w] = from_acc<T>(out[r]);
  }
}

// Through layer 3 for one 32-channel chunk of layer 2: dz2 = act'(z2) * W3^T dy (written to the
// NCHW accumulator buffer), and this split's dW3 and db2 partials. grid (splits, chunks, groups).
template <typename T>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_backward_out_kernel(const ChainArgs<T> args, const T* __restrict__ dy, const Strides4 dys,
                              acc_t<T>* __restrict__ dz2, acc_t<T>* __restrict__ dw3_part,
                              acc_t<T>* __restrict__ db2_part, const int64_t tiles, const int64_t per_split) {
  __shared__ TilePixels tp;
  __shared__ acc_t<T> small[kChainPixels][kChainPitch];
  __shared__ acc_t<T> grads[kChainPixels][kChainPitch];
  __shared__ acc_t<T> square[kChainWidth][kChainPitch];
  const ChainShape& s = args.s;
  const int64_t split = blockIdx.x, c0 = int64_t(blockIdx.y) * kChainWidth, g = blockIdx.z;
  const int64_t gc = s.groups * s.c, go = s.groups * s.o;
  const bool real_c = c0 + chain_col() < s.c;
  const int64_t end = (split + 1) * per_split < tiles ? (split + 1) * per_split : tiles;
  for (int64_t tile = split * per_split; tile < end; ++tile) {
    load_tile_pixels(tp, tile, s.batch, s.out_h, s.out_w);
    __syncthreads();
    acc_t<T> z2[kChainRows], dh2[kChainRows];
    layer2_tile(args, tp, g, c0, small, square, z2);
    #pragma unroll
    for (int r = 0; r < kChainRows; ++r) {
      small[chain_row(r)][chain_col()] = real_c ? act(z2[r], s.relu) : acc_t<T>(0);  // h2
      dh2[r] = acc_t<T>(0);
    }
    for (int64_t o0 = 0; o0 < s.o; o0 += kChainWidth) {
      const int64_t o = o0 + chain_col();
      #pragma unroll
      for (int r = 0; r < kChainRows; ++r) {
        const int row = chain_row(r);
        grads[row][chain_col()] = o < s.o && tp.ok[row]
            ? to_acc(dy[tp.n[row] * dys.n + (g * s.o + o) * dys.c + tp.row[row] * dys.h + tp.col[row] * dys.w])
            : acc_t<T>(0);
      }
      #pragma unroll
      for (int e = 0; e < kChainSquare; ++e) {
        const int64_t oo = o0 + square_row(e), c = c0 + square_col(e);
        square[square_row(e)][square_col(e)] = oo < s.o && c < s.c ? to_acc(args.w3[(g * s.o + oo) * s.c + c]) : acc_t<T>(0);
      }
      __syncthreads();
            tile_dot_nn(dh2, grads, square);
      #pragma unroll
      for (int e = 0; e < kChainSquare; ++e) {  // dW3[o, c] += sum over the tile's pixels of dy * h2
        const int64_t oo = o0 + square_row(e), c = c0 + square_col(e);
        if (oo < s.o && c < s.c) {
          acc_t<T> sum = acc_t<T>(0);
          for (int p = 0; p < kChainPixels; ++p) sum += grads[p][square_row(e)] * small[p][square_col(e)];
          dw3_part[(split * go + g * s.o + oo) * s.c + c] += sum;
        }
      }
      __syncthreads();
    }
    #pragma unroll
    for (int r = 0; r < kChainRows; ++r) {
      const int row = chain_row(r);
      const acc_t<T> d = tp.ok[row] && real_c ? act_grad(dh2[r], z2[r], s.relu) : acc_t<T>(0);
      grads[row][chain_col()] = d;
      if (tp.ok[row] && real_c) {
        dz2[((tp.n[row] * gc + g * s.c + c0 + chain_col()) * s.out_h + tp.row[row]) * s.out_w + tp.col[row]] = d;
      }
    }
    __syncthreads();
    if (s.has_bias && threadIdx.x < kChainWidth && real_c) {
      acc_t<T> sum = acc_t<T>(0);
      for (int p = 0; p < kChainPixels; ++p) sum += grads[p][chain_col()];
      db2_part[split * gc + g * s.c + c0 + chain_col()] += sum;
    }
    __syncthreads();
  }
}

// Over layer-1 positions: dh1 gathered from dz2 through layer 2's taps (no dilated gradient is
// built), dz1, this split's dW2/dW1/db1 partials, and in `grad1` either dx (pointwise layer 1,
// accumulated over the channel chunks in an NCHW buffer only this block touches) or dz1 (written).
// grid (splits, groups).
template <typename T, typename D>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_backward_in_kernel(const ChainArgs<T> args, const D* __restrict__ dz2, const Strides4 dzs,
                             acc_t<T>* __restrict__ grad1,
                             acc_t<T>* __restrict__ dw1_part, acc_t<T>* __restrict__ db1_part,
                             acc_t<T>* __restrict__ dw2_part, const int64_t tiles, const int64_t per_split) {
  __shared__ TilePixels tp;
  __shared__ acc_t<T> small[kChainPixels][kChainPitch];
  __shared__ acc_t<T> held[kChainPixels][kChainPitch];
  __shared__ acc_t<T> square[kChainWidth][kChainPitch];
  const ChainShape& s = args.s;
  const int64_t split = blockIdx.x, g = blockIdx.y;
  const int64_t taps = s.kh * s.kw, k1 = s.mg * s.k1h * s.k1w;
  const int64_t ga = s.groups * s.a, gc = s.groups * s.c;
  const bool pointwise = s.k1h * s.k1w == 1;
  const int64_t end = (split + 1) * per_split < tiles ? (split + 1) * per_split : tiles;
  for (int64_t tile = split * per_split; tile < end; ++tile) {
    load_tile_pixels(tp, tile, s.batch, s.h1, s.w1);
    __syncthreads();
    for (int64_t a0 = 0; a0 < s.a; a0 += kChainWidth) {
      const bool real_a = a0 + chain_col() < s.a;
      acc_t<T> z1[kChainRows], dh1[kChainRows];
      layer1_tile(args, tp, 1, 0, 1, 0, g, a0, small, square, z1);
      #pragma unroll
      for (int r = 0; r < kChainRows; ++r) {
        held[chain_row(r)][chain_col()] = real_a ? act(z1[r], s.relu) : acc_t<T>(0);  // h1
        dh1[r] = acc_t<T>(0);
      }
      for (int64_t tap = 0; tap < taps; ++tap) {
        for (int64_t c0 = 0; c0 < s.c; c0 += kChainWidth) {
          const int64_t c = c0 + chain_col();
          #pragma unroll
          for (int r = 0; r < kChainRows; ++r) {
            const int row = chain_row(r);
            const int64_t hp = tp.row[row] - (tap / s.kw) * s.dh, wp = tp.col[row] - (tap % s.kw) * s.dw;
            const bool hit = tp.ok[row] && c < s.c && hp >= 0 && wp >= 0 && hp % s.sh == 0 && wp % s.sw == 0 &&
                             hp / s.sh < s.out_h && wp / s.sw < s.out_w;
            small[row][chain_col()] =
                hit ? to_acc(dz2[tp.n[row] * dzs.n + (g * s.c + c) * dzs.c + (hp / s.sh) * dzs.h + (wp / s.sw) * dzs.w])
                    : acc_t<T>(0);
          }
          #pragma unroll
          for (int e = 0; e < kChainSquare; ++e) {
            const int64_t cc = c0 + square_row(e), a = a0 + square_col(e);
            square[square_row(e)][square_col(e)] =
                cc < s.c && a < s.a ? to_acc(args.w2[((g * s.c + cc) * s.a + a) * taps + tap]) : acc_t<T>(0);
          }
          __syncthreads();
                    tile_dot_nn(dh1, small, square);
          #pragma unroll
          for (int e = 0; e < kChainSquare; ++e) {  // dW2[c, a, tap] += sum over pixels of dz2 * h1
            const int64_t cc = c0 + square_row(e), a = a0 + square_col(e);
            if (cc < s.c && a < s.a) {
              acc_t<T> sum = acc_t<T>(0);
              for (int p = 0; p < kChainPixels; ++p) sum += small[p][square_row(e)] * held[p][square_col(e)];
              dw2_part[((split * gc + g * s.c + cc) * s.a + a) * taps + tap] += sum;
            }
          }
          __syncthreads();
        }
      }
      #pragma unroll
      for (int r = 0; r < kChainRows; ++r) {  // dz1 replaces h1 in `held`
        const int row = chain_row(r);
        held[row][chain_col()] = tp.ok[row] && real_a ? act_grad(dh1[r], z1[r], s.relu) : acc_t<T>(0);
      }
      __syncthreads();
      if (s.has_bias && threadIdx.x < kChainWidth && real_a) {
        acc_t<T> sum = acc_t<T>(0);
        for (int p = 0; p < kChainPixels; ++p) sum += held[p][chain_col()];
        db1_part[split * ga + g * s.a + a0 + chain_col()] += sum;
      }
      for (int64_t k0 = 0; k0 < k1; k0 += kChainWidth) {
        load_x_tile(args, tp, 1, 0, 1, 0, g, k0, small);
        #pragma unroll
        for (int e = 0; e < kChainSquare; ++e) {
          const int64_t a = a0 + square_row(e), k = k0 + square_col(e);
          square[square_row(e)][square_col(e)] = a < s.a && k < k1 ? to_acc(args.w1[(g * s.a + a) * k1 + k]) : acc_t<T>(0);
        }
        __syncthreads();
        #pragma unroll
        for (int e = 0; e < kChainSquare; ++e) {  // dW1[a, k] += sum over pixels of dz1 * x
          const int64_t a = a0 + square_row(e), k = k0 + square_col(e);
          if (a < s.a && k < k1) {
            acc_t<T> sum = acc_t<T>(0);
            for (int p = 0; p < kChainPixels; ++p) sum += held[p][square_row(e)] * small[p][square_col(e)];
            dw1_part[(split * ga + g * s.a + a) * k1 + k] += sum;
          }
        }
        if (pointwise && k0 + chain_col() < k1) {  // dx = W1^T dz1 at this very pixel, if it is in the image
          #pragma unroll
          for (int r = 0; r < kChainRows; ++r) {
            const int row = chain_row(r);
            const int64_t h = tp.row[row] - s.pad_top, w = tp.col[row] - s.pad_left;
            if (tp.ok[row] && h >= 0 && h < s.height && w >= 0 && w < s.width) {
              acc_t<T> sum = acc_t<T>(0);
              for (int a = 0; a < kChainWidth; ++a) sum += held[row][a] * square[a][chain_col()];
              grad1[((tp.n[row] * s.groups + g) * s.mg + k0 + chain_col()) * s.height * s.width + h * s.width + w] += sum;
            }
          }
        }
        __syncthreads();
      }
      if (!pointwise) {
        #pragma unroll
        for (int r = 0; r < kChainRows; ++r) {
          const int row = chain_row(r);
          if (tp.ok[row] && real_a) {
            grad1[((tp.n[row] * ga + g * s.a + a0 + chain_col()) * s.h1 + tp.row[row]) * s.w1 + tp.col[row]] =
                held[row][chain_col()];
          }
        }
      }
      __syncthreads();
    }
  }
}

// dx from dz1 through a KxK layer 1's (stride-1, dilated) taps; groups == 1. grid (pixel tiles of
// the input, chunks of its channels).
template <typename T>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_dgrad1_kernel(const acc_t<T>* __restrict__ dz1, const T* __restrict__ w1, T* __restrict__ dx,
                        const Strides4 dxs, const ChainShape s) {
  __shared__ TilePixels tp;
  __shared__ acc_t<T> small[kChainPixels][kChainPitch];
  __shared__ acc_t<T> square[kChainWidth][kChainPitch];
  const int64_t m0 = int64_t(blockIdx.y) * kChainWidth;
  const int64_t taps1 = s.k1h * s.k1w, k2 = s.a * taps1;
  load_tile_pixels(tp, blockIdx.x, s.batch, s.height, s.width);
  __syncthreads();
  acc_t<T> acc[kChainRows];
  #pragma unroll
  for (int r = 0; r < kChainRows; ++r) acc[r] = acc_t<T>(0);
  for (int64_t k0 = 0; k0 < k2; k0 += kChainWidth) {
    const int64_t k = k0 + chain_col(), a = k / taps1, tap = k % taps1;
    #pragma unroll
    for (int r = 0; r < kChainRows; ++r) {
      const int row = chain_row(r);
      const int64_t i = tp.row[row] + s.pad_top - (tap / s.k1w) * s.d1h;
      const int64_t j = tp.col[row] + s.pad_left - (tap % s.k1w) * s.d1w;
      const bool hit = tp.ok[row] && k < k2 && i >= 0 && i < s.h1 && j >= 0 && j < s.w1;
      small[row][chain_col()] = hit ? dz1[((tp.n[row] * s.a + a) * s.h1 + i) * s.w1 + j] : acc_t<T>(0);
    }
    #pragma unroll
    for (int e = 0; e < kChainSquare; ++e) {
      const int64_t kk = k0 + square_row(e), m = m0 + square_col(e);
      square[square_row(e)][square_col(e)] =
          kk < k2 && m < s.mg ? to_acc(w1[((kk / taps1) * s.mg + m) * taps1 + kk % taps1]) : acc_t<T>(0);
    }
    __syncthreads();
        tile_dot_nn(acc, small, square);
    __syncthreads();
  }
  const int64_t m = m0 + chain_col();
  #pragma unroll
  for (int r = 0; r < kChainRows; ++r) {
    const int row = chain_row(r);
    if (tp.ok[row] && m < s.mg) dx[tp.n[row] * dxs.n + m * dxs.c + tp.row[row] * dxs.h + tp.col[row] * dxs.w] = from_acc<T>(acc[r]);
  }
}

// out[channel] = sum over (n, p, q) of dy, one block per channel, a fixed-order tree reduction.
template <typename T>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_channel_sum_kernel(const T* __restrict__ dy, const Strides4 dys, const int64_t batch, const int64_t rows,
                             const int64_t cols, T* __restrict__ out) {
  __shared__ acc_t<T> partial[kChainThreads];
  const int64_t channel = blockIdx.x, pixels = batch * rows * cols;
  acc_t<T> sum = acc_t<T>(0);
  for (int64_t e = threadIdx.x; e < pixels; e += kChainThreads) {
    const int64_t n = e / (rows * cols), p = e % (rows * cols) / cols, q = e % cols;
    sum += to_acc(dy[n * dys.n + channel * dys.c + p * dys.h + q * dys.w]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kChainThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[channel] = from_acc<T>(partial[0]);
}

// dx (any strides, T) from the NCHW accumulator buffer.
template <typename T>
__global__ void __launch_bounds__(kChainThreads, 1)
    chain_store_dx_kernel(const acc_t<T>* __restrict__ dx_acc, T* __restrict__ dx, const Strides4 dxs,
                          const int64_t batch, const int64_t channels, const int64_t rows, const int64_t cols) {
  const int64_t total = batch * channels * rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = e / (channels * rows * cols), c = e / (rows * cols) % channels, h = e / cols % rows, w = e % cols;
    dx[n * dxs.n + c * dxs.c + h * dxs.h + w * dxs.w] = from_acc<T>(dx_acc[e]);
  }
}

}  // namespace detail
}  // namespace expandnets
