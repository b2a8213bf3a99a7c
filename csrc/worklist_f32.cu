// Work-list composition kernels (many CL/FC units of different shapes per launch) for float.
#include "expandnets/worklist_launch.cuh"

namespace expandnets {

using T = float;

template cudaError_t cl_worklist_forward<T>(const ClWorkUnit<T>*, int64_t, const ClWorkTotals&, T*, T*, cudaStream_t);
template cudaError_t cl_worklist_backward<T>(const ClWorkUnit<T>*, int64_t, const ClWorkTotals&, const T*, const T*, T*,
                                             T*, T*, T*, T*, T*, cudaStream_t);

}  // namespace expandnets
