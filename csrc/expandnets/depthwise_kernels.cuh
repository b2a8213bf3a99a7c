// Depthwise convolution (one input and one output channel per group): elementwise kernels over the
// taps, which beat an implicit GEMM that would be one column wide. Accumulation in acc_t<T>.
#pragma once

#include "expandnets/conv.h"
#include "expandnets/conv_index.cuh"
#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

constexpr int kDepthwiseThreads = 256;

// One thread per output element (grid-stride): y[n, c, p, q] = sum over taps of x W[c] (+ bias[c]).
template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    depthwise_forward_kernel(const T* __restrict__ x, Strides4 sx, const T* __restrict__ weight,
                             const T* __restrict__ bias, T* __restrict__ y, Strides4 sy, ConvShape s,
                             bool channels_inner) {
  using Acc = acc_t<T>;
  const int64_t total = s.batch * s.channels * s.out_height * s.out_width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const Element out = split_element(e, s.channels, s.out_height, s.out_width, channels_inner);
    const T* xc = x + out.n * sx.n + out.c * sx.c;
    const T* wc = weight + out.c * s.kernel_h * s.kernel_w;
    Acc acc = Acc(0);
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const int64_t h = out.h * s.stride_h - s.pad_h + kh * s.dilation_h;
      if (h < 0 || h >= s.height) continue;
      for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
        const int64_t w = out.w * s.stride_w - s.pad_w + kw * s.dilation_w;
        if (w < 0 || w >= s.width) continue;
        acc = fma(to_acc(xc[h * sx.h + w * sx.w]), to_acc(wc[kh * s.kernel_w + kw]), acc);
      }
    }
    if (bias != nullptr) acc += to_acc(bias[out.c]);
    y[out.n * sy.n + out.c * sy.c + out.h * sy.h + out.w * sy.w] = from_acc<T>(acc);
  }
}

// One thread per input element: dx[n, c, h, w] = sum over the taps whose output position
// (h + pad - tap * dilation) / stride is whole and inside of dy W[c].
template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    depthwise_input_grad_kernel(const T* __restrict__ dy, Strides4 sdy, const T* __restrict__ weight,
                                T* __restrict__ dx, Strides4 sdx, ConvShape s, bool channels_inner) {
  using Acc = acc_t<T>;
  const int64_t total = s.batch * s.channels * s.height * s.width;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const Element in = split_element(e, s.channels, s.height, s.width, channels_inner);
    const T* dyc = dy + in.n * sdy.n + in.c * sdy.c;
    const T* wc = weight + in.c * s.kernel_h * s.kernel_w;
    Acc acc = Acc(0);
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      const int64_t hs = in.h + s.pad_h - kh * s.dilation_h;
      if (hs < 0 || hs % s.stride_h != 0 || hs / s.stride_h >= s.out_height) continue;
      for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
        const int64_t ws = in.w + s.pad_w - kw * s.dilation_w;
        if (ws < 0 || ws % s.stride_w != 0 || ws / s.stride_w >= s.out_width) continue;
        acc = fma(to_acc(dyc[(hs / s.stride_h) * sdy.h + (ws / s.stride_w) * sdy.w]),
                  to_acc(wc[kh * s.kernel_w + kw]), acc);
      }
    }
    dx[in.n * sdx.n + in.c * sdx.c + in.h * sdx.h + in.w * sdx.w] = from_acc<T>(acc);
  }
}

// Sum of v over the block, in a fixed order (deterministic); every thread gets the total.
template <typename Acc>
__device__ Acc block_sum(Acc v, Acc* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kDepthwiseThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) scratch[threadIdx.x] += scratch[threadIdx.x + stride];
    __syncthreads();
  }
  const Acc total = scratch[0];
  __syncthreads();  // scratch is reused by the next call
  return total;
}

// One block per (channel, chunk of output pixels): partial[split, c, tap] = sum over the chunk of
// dy x under that tap, and bias_partial[split, c] = sum of dy (the layout of the GEMM pass with
// one input channel per group).
template <typename T>
__global__ void __launch_bounds__(kDepthwiseThreads)
    depthwise_weight_grad_kernel(const T* __restrict__ x, Strides4 sx, const T* __restrict__ dy, Strides4 sdy,
                                 acc_t<T>* __restrict__ partial, acc_t<T>* __restrict__ bias_partial, ConvShape s,
                                 int64_t chunk) {
  using Acc = acc_t<T>;
  __shared__ Acc scratch[kDepthwiseThreads];
  const int64_t c = blockIdx.x, split = blockIdx.y, taps = s.kernel_h * s.kernel_w;
  const int64_t pixels = s.batch * s.out_height * s.out_width, begin = split * chunk;
  const int64_t end = begin + chunk < pixels ? begin + chunk : pixels;
  const T* xc = x + c * sx.c;
  const T* dyc = dy + c * sdy.c;
  for (int64_t tap = 0; tap < taps; ++tap) {
    const int64_t kh = tap / s.kernel_w, kw = tap - kh * s.kernel_w;
    Acc acc = Acc(0);
    for (int64_t m = begin + threadIdx.x; m < end; m += kDepthwiseThreads) {
      const Pixel px = split_pixel(m, s.out_height, s.out_width);
      const int64_t h = px.h * s.stride_h - s.pad_h + kh * s.dilation_h;
      const int64_t w = px.w * s.stride_w - s.pad_w + kw * s.dilation_w;
      if (h < 0 || h >= s.height || w < 0 || w >= s.width) continue;
      acc = fma(to_acc(dyc[px.n * sdy.n + px.h * sdy.h + px.w * sdy.w]), to_acc(xc[px.n * sx.n + h * sx.h + w * sx.w]),
                acc);
    }
    const Acc total = block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[(split * s.channels + c) * taps + tap] = total;
  }
  if (bias_partial == nullptr) return;  // block-uniform
  Acc acc = Acc(0);
  for (int64_t m = begin + threadIdx.x; m < end; m += kDepthwiseThreads) {
    const Pixel px = split_pixel(m, s.out_height, s.out_width);
    acc += to_acc(dyc[px.n * sdy.n + px.h * sdy.h + px.w * sdy.w]);
  }
  const Acc total = block_sum(acc, scratch);
  if (threadIdx.x == 0) bias_partial[split * s.channels + c] = total;
}

}  // namespace detail
}  // namespace expandnets
