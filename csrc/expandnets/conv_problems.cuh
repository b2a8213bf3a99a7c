// The three passes of a grouped convolution as implicit-GEMM problems (see implicit_gemm.cuh),
// per group g (taps = kernel_h * kernel_w, cg/og = channels/out_channels per group):
// - forward:      C[pixel (n, p, q), o]  = sum over k = (c, tap) of x[n, c, p*s - pad + tap*d] W[o, k];
// - input grad:   C[pixel (n, h, w), c]  = sum over k = (o, tap) of dy[n, o, (h + pad - tap*d) / s] W[o, c, tap],
//                 taking dy only where (h + pad - tap*d) is a non-negative multiple of the stride (so no
//                 dilated gradient is ever built);
// - weight grad:  C[o, (c, tap)]         = sum over pixels k of dy[k, o] x[k shifted by tap, c], the
//                 pixels split into chunks whose partial sums are added afterwards (deterministic,
//                 no atomics), and the bias gradient taken as the row sums of dy on the way.
#pragma once

#include <algorithm>

#include "expandnets/conv.h"
#include "expandnets/conv_index.cuh"
#include "expandnets/depthwise_kernels.cuh"
#include "expandnets/implicit_gemm.cuh"
#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

template <typename T>
struct ForwardProblem {
  using Scalar = T;
  using Acc = acc_t<T>;
  const T* x;
  Strides4 sx;
  const T* weight;
  const T* bias;  // null: no bias
  T* y;
  Strides4 sy;
  ConvShape s;
  int64_t cg, og, taps;

  __host__ __device__ int64_t rows() const { return s.batch * s.out_height * s.out_width; }
  __host__ __device__ int64_t cols() const { return og; }
  __device__ int64_t k_begin(int64_t) const { return 0; }
  __device__ int64_t k_end(int64_t) const { return cg * taps; }
  __device__ bool wants_row_sums() const { return false; }

  struct Row {
    const T* x;  // this pixel's image, first channel of the group
    int64_t h0, w0;  // top-left input position of its window
  };
  __device__ Row row(int64_t m, int64_t g) const {
    const Pixel px = split_pixel(m, s.out_height, s.out_width);
    return {x + px.n * sx.n + g * cg * sx.c, px.h * s.stride_h - s.pad_h, px.w * s.stride_w - s.pad_w};
  }
  __device__ T a(const Row& r, int64_t k) const {
    const int64_t c = k / taps, tap = k - c * taps, kh = tap / s.kernel_w, kw = tap - kh * s.kernel_w;
    const int64_t h = r.h0 + kh * s.dilation_h, w = r.w0 + kw * s.dilation_w;
    return h >= 0 && h < s.height && w >= 0 && w < s.width ? r.x[c * sx.c + h * sx.h + w * sx.w] : zero<T>();
  }

  struct Col {
    const T* filter;  // W[o], contiguous over k
  };
  __device__ Col col(int64_t n, int64_t g) const { return {weight + (g * og + n) * cg * taps}; }
  __device__ T b(int64_t k, const Col& c) const { return c.filter[k]; }

  __device__ void store(int64_t m, int64_t n, Acc v, int64_t g) const {
    const Pixel px = split_pixel(m, s.out_height, s.out_width);
    const int64_t o = g * og + n;
    if (bias != nullptr) v += to_acc(bias[o]);
    y[px.n * sy.n + o * sy.c + px.h * sy.h + px.w * sy.w] = from_acc<T>(v);
  }
  __device__ void store_row_sum(int64_t, Acc, int64_t) const {}
};

template <typename T>
struct InputGradProblem {
  using Scalar = T;
  using Acc = acc_t<T>;
  const T* dy;
  Strides4 sdy;
  const T* weight;
  T* dx;
  Strides4 sdx;
  ConvShape s;
  int64_t cg, og, taps;

  __host__ __device__ int64_t rows() const { return s.batch * s.height * s.width; }
  __host__ __device__ int64_t cols() const { return cg; }
  __device__ int64_t k_begin(int64_t) const { return 0; }
  __device__ int64_t k_end(int64_t) const { return og * taps; }
  __device__ bool wants_row_sums() const { return false; }

  struct Row {
    const T* dy;  // this pixel's image, first output channel of the group
    int64_t h, w;  // padded input position: p * stride + tap * dilation for every output p that read it
  };
  __device__ Row row(int64_t m, int64_t g) const {
    const Pixel px = split_pixel(m, s.height, s.width);
    return {dy + px.n * sdy.n + g * og * sdy.c, px.h + s.pad_h, px.w + s.pad_w};
  }
  __device__ T a(const Row& r, int64_t k) const {
    const int64_t o = k / taps, tap = k - o * taps, kh = tap / s.kernel_w, kw = tap - kh * s.kernel_w;
    const int64_t hs = r.h - kh * s.dilation_h, ws = r.w - kw * s.dilation_w;
    if (hs < 0 || ws < 0 || hs % s.stride_h != 0 || ws % s.stride_w != 0) return zero<T>();
    const int64_t p = hs / s.stride_h, q = ws / s.stride_w;
    return p < s.out_height && q < s.out_width ? r.dy[o * sdy.c + p * sdy.h + q * sdy.w] : zero<T>();
  }

  struct Col {
    const T* filter;  // W[g * og, c, 0]; W[g * og + o, c, tap] is filter[o * cg * taps + tap]
  };
  __device__ Col col(int64_t c, int64_t g) const { return {weight + (g * og * cg + c) * taps}; }
  __device__ T b(int64_t k, const Col& c) const {
    const int64_t o = k / taps;
    return c.filter[o * cg * taps + (k - o * taps)];
  }

  __device__ void store(int64_t m, int64_t c, Acc v, int64_t g) const {
    const Pixel px = split_pixel(m, s.height, s.width);
    dx[px.n * sdx.n + (g * cg + c) * sdx.c + px.h * sdx.h + px.w * sdx.w] = from_acc<T>(v);
  }
  __device__ void store_row_sum(int64_t, Acc, int64_t) const {}
};

// blockIdx.z = group * splits + split; partial[split, o, (c, tap)] and bias_partial[split, o].
template <typename T>
struct WeightGradProblem {
  using Scalar = T;
  using Acc = acc_t<T>;
  const T* x;
  Strides4 sx;
  const T* dy;
  Strides4 sdy;
  Acc* partial;
  Acc* bias_partial;  // null: no bias
  ConvShape s;
  int64_t cg, og, taps, splits, chunk;

  __host__ __device__ int64_t rows() const { return og; }
  __host__ __device__ int64_t cols() const { return cg * taps; }
  __device__ int64_t k_begin(int64_t z) const { return (z % splits) * chunk; }
  __device__ int64_t k_end(int64_t z) const {
    const int64_t pixels = s.batch * s.out_height * s.out_width, end = k_begin(z) + chunk;
    return end < pixels ? end : pixels;
  }
  __device__ bool wants_row_sums() const { return bias_partial != nullptr; }

  struct Row {
    const T* dy;  // output channel o of the group
  };
  __device__ Row row(int64_t o, int64_t z) const { return {dy + ((z / splits) * og + o) * sdy.c}; }
  __device__ T a(const Row& r, int64_t k) const {
    const Pixel px = split_pixel(k, s.out_height, s.out_width);
    return r.dy[px.n * sdy.n + px.h * sdy.h + px.w * sdy.w];
  }

  struct Col {
    const T* x;  // input channel c of the group
    int64_t h_off, w_off;  // input position of output (0, 0) under this tap
  };
  __device__ Col col(int64_t j, int64_t z) const {
    const int64_t c = j / taps, tap = j - c * taps, kh = tap / s.kernel_w, kw = tap - kh * s.kernel_w;
    return {x + ((z / splits) * cg + c) * sx.c, kh * s.dilation_h - s.pad_h, kw * s.dilation_w - s.pad_w};
  }
  __device__ T b(int64_t k, const Col& c) const {
    const Pixel px = split_pixel(k, s.out_height, s.out_width);
    const int64_t h = px.h * s.stride_h + c.h_off, w = px.w * s.stride_w + c.w_off;
    return h >= 0 && h < s.height && w >= 0 && w < s.width ? c.x[px.n * sx.n + h * sx.h + w * sx.w] : zero<T>();
  }

  __device__ void store(int64_t o, int64_t j, Acc v, int64_t z) const {
    partial[((z % splits) * s.out_channels + (z / splits) * og + o) * cols() + j] = v;
  }
  __device__ void store_row_sum(int64_t o, Acc v, int64_t z) const {
    bias_partial[(z % splits) * s.out_channels + (z / splits) * og + o] = v;
  }
};

struct PixelSplit {
  int64_t count, chunk;
};

// How the weight gradient splits its pixel reduction (here and in the depthwise kernel): enough
// blocks to fill a GPU, at most 64 partial sums, at most 65535 (group, chunk) blocks along grid.z,
// and chunks made of whole k steps.
inline PixelSplit weight_grad_split(const ConvShape& s) {
  const int64_t pixels = s.batch * s.out_height * s.out_width;
  if (pixels == 0) return {0, 0};
  const bool depthwise = conv2d_is_depthwise(s);
  const int64_t granule = depthwise ? kDepthwiseThreads : kGemmK;
  const int64_t cap = depthwise ? 64 : std::max<int64_t>(1, std::min<int64_t>(64, kMaxGridYZ / s.groups));
  const int64_t wanted = std::max<int64_t>(1, std::min<int64_t>(cap, pixels / 1024));
  const int64_t chunk = ceil_div(ceil_div(pixels, wanted), granule) * granule;
  return {ceil_div(pixels, chunk), chunk};
}

}  // namespace detail
}  // namespace expandnets
