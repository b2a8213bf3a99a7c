// Chain-fused expanded units (the nonlinear counterpart's fast path, and a third path for linear
// units): `layer1 -> act -> layer2 [-> act -> 1x1 layer3]` in one launch forward, the r-times-wider
// intermediates kept in shared memory and registers, recomputed (never saved) in the backward.
//
// layer1 is a k1h x k1w convolution (CL: 1x1; a CK pair: the first 3x3, groups == 1), layer2 the
// kh x kw convolution with stride and dilation, layer3 (o > 0) CL's trailing 1x1; all with `groups`.
// The unit's zero padding (pad_top/pad_left; bottom/right follow from h1/w1) is applied once, at
// its input, exactly as python_ref does: a layer-1 position in the padding computes act(b1).
// act is ReLU when `relu`, else the identity.
//
// Weights are contiguous nn.Conv2d layouts: w1 (groups*a, mg, k1h, k1w), w2 (groups*c, a, kh, kw),
// w3 (groups*o, c); biases all present or all null. Activations go through NCHW-indexed strides.
// Every product is a plain FMA in the accumulator type (float; double for double): the chain
// kernels have no tensor-core path, so allow_tf32 does not apply to them.
// Backward: weight gradients are summed over fixed pixel splits in per-split partial buffers (one
// writer each, no atomics) and reduced in split order, so results are deterministic.
// Index math is 64-bit; cudaErrorInvalidConfiguration means a size exceeds the grid limits.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "expandnets/conv.h"  // Strides4

namespace expandnets {

struct ChainShape {
  int64_t batch, groups, mg, a, c, o;  // o == 0: no layer 3 (a CK pair)
  int64_t height, width;               // the unit's input, unpadded
  int64_t h1, w1;                      // layer-1 output grid (padded input minus layer 1's extent)
  int64_t out_h, out_w;                // layer-2 output
  int64_t pad_top, pad_left;
  int64_t k1h, k1w, d1h, d1w;          // layer 1 (stride 1)
  int64_t kh, kw, sh, sw, dh, dw;      // layer 2
  bool has_bias, relu;
};

template <typename T>
cudaError_t chain_forward(const T* x, Strides4 x_strides, const T* w1, const T* b1, const T* w2, const T* b2,
                          const T* w3, const T* b3, T* y, Strides4 y_strides, const ChainShape& shape,
                          cudaStream_t stream);

// Bytes of scratch memory chain_backward needs (16-byte aligned): the per-split partial sums and
// the transient gradients of the intermediates (dz2 with layer 3, dz1 or the dx accumulator).
template <typename T>
size_t chain_backward_workspace_bytes(const ChainShape& shape);

// dx and every weight/bias gradient (bias pointers may be null without biases; dw3/db3 without
// layer 3). The workspace is cleared by the launcher.
template <typename T>
cudaError_t chain_backward(const T* dy, Strides4 dy_strides, const T* x, Strides4 x_strides, const T* w1,
                           const T* b1, const T* w2, const T* b2, const T* w3, T* dx, Strides4 dx_strides, T* dw1,
                           T* db1, T* dw2, T* db2, T* dw3, T* db3, void* workspace, const ChainShape& shape,
                           cudaStream_t stream);

}  // namespace expandnets
