// Composition kernels (CL/FC chain, bias fold, CK fold; forward and backward) for double.
#include "expandnets/compose_launch.cuh"

namespace expandnets {

using T = double;

template cudaError_t cl_compose_forward<T>(const T*, const T*, const T*, T*, const ClShape&, cudaStream_t);
template cudaError_t cl_compose_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, const ClShape&,
                                            cudaStream_t);
template cudaError_t cl_bias_fold<T>(const T*, const T*, const T*, const T*, const T*, T*, const ClShape&,
                                     cudaStream_t);
template cudaError_t ck_fold_forward<T>(const T*, const T*, T*, const CkShape&, cudaStream_t);
template cudaError_t ck_fold_backward<T>(const T*, const T*, const T*, T*, T*, const CkShape&, cudaStream_t);

}  // namespace expandnets
