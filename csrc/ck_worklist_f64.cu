// CK work-list kernels (the folds of many CK units at one level per launch) for double.
#include "expandnets/ck_worklist_launch.cuh"

namespace expandnets {

using T = double;

template cudaError_t ck_worklist_forward<T>(const CkWorkPair<T>*, int64_t, const CkWorkTotals&, T*, cudaStream_t);
template cudaError_t ck_worklist_backward<T>(const CkWorkPair<T>*, int64_t, const CkWorkTotals&, T*, T*, cudaStream_t);

}  // namespace expandnets
