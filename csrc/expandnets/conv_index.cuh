// Flat indices of the convolution passes back to NCHW coordinates (64-bit throughout).
#pragma once

#include <cstdint>

namespace expandnets {
namespace detail {

// A GEMM row or reduction index over (batch, height, width) in that order.
struct Pixel {
  int64_t n, h, w;
};

__device__ __forceinline__ Pixel split_pixel(int64_t m, int64_t height, int64_t width) {
  const int64_t plane = height * width, n = m / plane, hw = m - n * plane, h = hw / width;
  return {n, h, hw - h * width};
}

// An element index of a depthwise pass. Channels vary fastest when the written tensor is
// channels_last and the width fastest otherwise, so consecutive threads touch neighbouring memory.
struct Element {
  int64_t n, c, h, w;
};

__device__ __forceinline__ Element split_element(int64_t e, int64_t channels, int64_t height, int64_t width,
                                                 bool channels_inner) {
  if (channels_inner) {
    const int64_t c = e % channels, pixel = e / channels;
    const int64_t w = pixel % width, nh = pixel / width;
    return {nh / height, c, nh % height, w};
  }
  const int64_t w = e % width, row = e / width;
  const int64_t h = row % height, plane = row / height;
  return {plane / channels, plane % channels, h, w};
}

}  // namespace detail
}  // namespace expandnets
