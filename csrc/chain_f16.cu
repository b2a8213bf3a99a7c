// Chain-fused unit kernels (forward, backward with its workspace) for __half.
#include "expandnets/chain_launch.cuh"

namespace expandnets {

using T = __half;

template cudaError_t chain_forward<T>(const T*, Strides4, const T*, const T*, const T*, const T*, const T*, const T*,
                                      T*, Strides4, const ChainShape&, cudaStream_t);
template size_t chain_backward_workspace_bytes<T>(const ChainShape&);
template cudaError_t chain_backward<T>(const T*, Strides4, const T*, Strides4, const T*, const T*, const T*,
                                       const T*, const T*, T*, Strides4, T*, T*, T*, T*, T*, T*, void*,
                                       const ChainShape&, cudaStream_t);

}  // namespace expandnets
