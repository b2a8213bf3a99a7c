// Convolution kernels (implicit GEMM and depthwise: forward, input and weight gradients) for float.
#include "expandnets/conv_launch.cuh"

namespace expandnets {

using T = float;

template cudaError_t conv2d_forward<T>(const T*, Strides4, const T*, const T*, T*, Strides4, const ConvShape&, bool,
                                       cudaStream_t);
template cudaError_t conv2d_input_grad<T>(const T*, Strides4, const T*, T*, Strides4, const ConvShape&, bool,
                                          cudaStream_t);
template size_t conv2d_weight_grad_workspace_bytes<T>(const ConvShape&);
template cudaError_t conv2d_weight_grad<T>(const T*, Strides4, const T*, Strides4, T*, T*, void*, const ConvShape&,
                                           bool, cudaStream_t);

}  // namespace expandnets
