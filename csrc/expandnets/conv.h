// The compact-size convolution of a fused unit (docs/design.md section 3): launchers for the forward
// pass (bias fused), the input gradient and the weight gradient (bias gradient fused). Plain CUDA
// C++: raw pointers, sizes, element strides and the stream to run on.
//
// Activations (x, y, dy, dx) are addressed through NCHW-indexed strides, so any memory format
// (contiguous, channels_last, sliced) works without a copy. Weights (out_channels,
// channels / groups, kernel_h, kernel_w), bias (out_channels) and their gradients are contiguous.
// Scalar types: float, double, __half, __nv_bfloat16. double and float with allow_tf32 == false
// run the exact path (plain FMA in the scalar type); float with allow_tf32 uses TF32 tensor cores,
// and the half types always use tensor cores (products are exact, sums in float32).
// Depthwise convolutions (groups == channels == out_channels > 1) take dedicated kernels.
// Index math is 64-bit throughout; cudaErrorInvalidConfiguration means a size exceeds the grid
// limits (more than 65535 groups, or a per-group channel count beyond 4M).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace expandnets {

struct ConvShape {
  int64_t batch, channels, height, width;         // input
  int64_t out_channels, out_height, out_width;    // output
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups;
};

// Element strides of a 4-D activation, in NCHW index order whatever its memory format.
struct Strides4 {
  int64_t n, c, h, w;
};

inline bool conv2d_is_depthwise(const ConvShape& s) {
  return s.groups > 1 && s.groups == s.channels && s.groups == s.out_channels;
}

template <typename T>
cudaError_t conv2d_forward(const T* x, Strides4 x_strides, const T* weight, const T* bias, T* y,
                           Strides4 y_strides, const ConvShape& shape, bool allow_tf32, cudaStream_t stream);

template <typename T>
cudaError_t conv2d_input_grad(const T* dy, Strides4 dy_strides, const T* weight, T* dx, Strides4 dx_strides,
                              const ConvShape& shape, bool allow_tf32, cudaStream_t stream);

// Bytes of scratch memory conv2d_weight_grad needs: the per-split partial sums that make the
// pixel reduction parallel and deterministic.
template <typename T>
size_t conv2d_weight_grad_workspace_bytes(const ConvShape& shape);

// dweight (and dbias unless it is null) from x and dy; workspace holds
// conv2d_weight_grad_workspace_bytes(shape) bytes, 16-byte aligned.
template <typename T>
cudaError_t conv2d_weight_grad(const T* x, Strides4 x_strides, const T* dy, Strides4 dy_strides, T* dweight,
                               T* dbias, void* workspace, const ConvShape& shape, bool allow_tf32,
                               cudaStream_t stream);

}  // namespace expandnets
