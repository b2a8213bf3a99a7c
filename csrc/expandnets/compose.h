// Composition of expanded weights (docs/design.md section 2): launchers for the CL/FC chain, the bias
// fold and the CK fold, forward and backward. Plain CUDA C++: raw pointers to contiguous arrays,
// sizes, and the stream to run on. Scalar types: float and double (the composition always runs
// in float32 or float64; accumulation is in the same type). Every launcher only enqueues work and
// returns the launch status; cudaErrorInvalidConfiguration means a size exceeds the grid limits.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace expandnets {

// CL per group g and tap t: W[g, :, :, t] = W3[g] @ W2[g, :, :, t] @ W1[g], with the layouts
// W1 (groups, a, i), W2 (groups, c, a, taps), W3 (groups, o, c), W (groups, o, i, taps).
// FC is the same with groups = taps = 1.
struct ClShape {
  int64_t groups, a, i, c, o, taps;
};

template <typename T>
cudaError_t cl_compose_forward(const T* w1, const T* w2, const T* w3, T* w, const ClShape& shape,
                               cudaStream_t stream);

// dW1[g] = sum_t W2_t^T W3^T dW_t,  dW2[g, :, :, t] = W3^T dW_t W1^T,  dW3[g] = sum_t dW_t W1^T W2_t^T.
template <typename T>
cudaError_t cl_compose_backward(const T* grad, const T* w1, const T* w2, const T* w3, T* dw1, T* dw2,
                                T* dw3, const ClShape& shape, cudaStream_t stream);

// bias[g] = W3[g] @ (sum_t W2[g, :, :, t] @ b1[g] + b2[g]) + b3[g]; b1 (groups, a), b2 (groups, c),
// b3 and bias (groups, o).
template <typename T>
cudaError_t cl_bias_fold(const T* w2, const T* w3, const T* b1, const T* b2, const T* b3, T* bias,
                         const ClShape& shape, cudaStream_t stream);

// One CK fold, the kernel of conv(conv(x, earlier), later):
// K[o, i, v + u] = sum_c later[o, c, v] earlier[c, i, u] over 2-D taps (a full correlation), with
// later (o, c, a, a2), earlier (c, i, b, b2), K (o, i, a + b - 1, a2 + b2 - 1).
struct CkShape {
  int64_t o, c, i, a, a2, b, b2;
};

template <typename T>
cudaError_t ck_fold_forward(const T* later, const T* earlier, T* out, const CkShape& shape, cudaStream_t stream);

// dL[o, c, v] = sum_u sum_i dK[o, i, v + u] E[c, i, u],  dE[c, i, u] = sum_v sum_o L[o, c, v] dK[o, i, v + u].
template <typename T>
cudaError_t ck_fold_backward(const T* grad, const T* later, const T* earlier, T* d_later, T* d_earlier,
                             const CkShape& shape, cudaStream_t stream);

}  // namespace expandnets
