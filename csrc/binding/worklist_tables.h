// The work lists' device tables: the CL/FC units' (worklist.cpp) and the CK folds' (ck_worklist.cpp),
// checked, described and cached here (device_table_cache.h). Defined in worklist_tables.cpp and
// instantiated there for float and double, so each dtype has one cache in the whole extension.
#pragma once

#include <ATen/ATen.h>

#include "binding/device_table_cache.h"
#include "expandnets/ck_worklist.h"
#include "expandnets/worklist.h"

namespace expandnets::binding {

using WorkList = DeviceTable<ClWorkTotals>;
// A planned table of folds on the device, as WorkList for the CL/FC units.
using CkWorkList = DeviceTable<CkWorkTotals>;

// The table of these units (per unit w1 (G, A, I), w2 (G, C, A, T), w3 (G, O, C), biases (G, A),
// (G, C), (G, O) or all bias lists empty), cached per set of (pointers, shapes).
template <typename T>
WorkList work_list(const char* op, at::TensorList w1, at::TensorList w2, at::TensorList w3, at::TensorList b1,
                   at::TensorList b2, at::TensorList b3);

// The table of these folds (later[u], earlier[u] and, for the backward, grad[u]; grad empty for the
// forward), cached likewise.
template <typename T>
CkWorkList ck_work_list(const char* op, at::TensorList later, at::TensorList earlier, at::TensorList grad);

template <typename T>
const ClWorkUnit<T>* work_table(const WorkList& list) {
  return static_cast<const ClWorkUnit<T>*>(list.table.const_data_ptr());
}

template <typename T>
const CkWorkPair<T>* ck_work_table(const CkWorkList& list) {
  return static_cast<const CkWorkPair<T>*>(list.table.const_data_ptr());
}

}  // namespace expandnets::binding
