// The work-list builders declared in worklist_tables.h: argument checks of whole lists, the cache
// keys, and the host descriptors a miss copies to the device.
#include "binding/worklist_tables.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "binding/checks.h"
#include "binding/tensors.h"

namespace expandnets::binding {

namespace {

using at::Tensor;

// Returns the checked shapes; every tensor on the device and of the dtype of w2[0].
std::vector<ClShape> work_shapes(const char* op, at::TensorList w1, at::TensorList w2, at::TensorList w3,
                                 at::TensorList b1, at::TensorList b2, at::TensorList b3) {
  const size_t n = w2.size();
  TORCH_CHECK(n > 0, op, ": no units");
  TORCH_CHECK(w1.size() == n && w3.size() == n, op, ": w1, w2 and w3 must list the same units, got ", w1.size(), ", ",
              n, " and ", w3.size());
  const bool biases = !b1.empty();
  TORCH_CHECK(b1.size() == b2.size() && b2.size() == b3.size() && (!biases || b1.size() == n), op,
              ": the biases must be given for every unit or for none");
  std::vector<ClShape> shapes;
  for (size_t u = 0; u < n; ++u) {
    check_tensor(op, "w2", w2[u], w2[0], 4);
    const ClShape s = cl_shape(op, w1[u], w2[u], w3[u]);
    if (biases) {
      const int64_t sizes[3] = {s.a, s.c, s.o};
      const Tensor* b[3] = {&b1[u], &b2[u], &b3[u]};
      const char* names[3] = {"b1", "b2", "b3"};
      for (int k = 0; k < 3; ++k) {
        check_weight(op, names[k], *b[k], w2[0], 2);
        check_shape(op, names[k], *b[k], {s.groups, sizes[k]});
      }
    }
    shapes.push_back(s);
  }
  return shapes;
}

int64_t ptr(const Tensor& t) { return reinterpret_cast<int64_t>(t.const_data_ptr()); }

// One cache per table type (work list and dtype), made on first use. Here, with internal linkage,
// rather than as a static of work_list<T>: a static of an exported template would be a global
// (GNU unique) symbol of the library.
template <typename Entry, typename Totals>
DeviceTableCache<Entry, Totals>& table_cache(size_t max_tables) {
  static DeviceTableCache<Entry, Totals> cache(max_tables);
  return cache;
}

}  // namespace

// Cached per set of (pointers, shapes) (DeviceTableCache): parameters updated in place keep their
// table. Past 64 tables (inputs that move every step, e.g. copies of non-contiguous ones) the
// uncaptured ones are dropped.
template <typename T>
WorkList work_list(const char* op, at::TensorList w1, at::TensorList w2, at::TensorList w3, at::TensorList b1,
                   at::TensorList b2, at::TensorList b3) {
  DeviceTableCache<ClWorkUnit<T>, ClWorkTotals>& cache = table_cache<ClWorkUnit<T>, ClWorkTotals>(64);
  const std::vector<ClShape> shapes = work_shapes(op, w1, w2, w3, b1, b2, b3);
  const bool biases = !b1.empty();
  std::vector<int64_t> key = {w2[0].get_device(), int64_t(w2[0].scalar_type()), int64_t(biases)};
  for (size_t u = 0; u < shapes.size(); ++u) {
    const ClShape& s = shapes[u];
    key.insert(key.end(), {ptr(w1[u]), ptr(w2[u]), ptr(w3[u]), s.groups, s.a, s.i, s.c, s.o, s.taps});
    if (biases) key.insert(key.end(), {ptr(b1[u]), ptr(b2[u]), ptr(b3[u])});
  }
  const auto describe = [&] {
    std::vector<ClWorkUnit<T>> units(shapes.size());
    for (size_t u = 0; u < shapes.size(); ++u) {
      units[u] = {};
      units[u].w1 = in<T>(w1[u]);
      units[u].w2 = in<T>(w2[u]);
      units[u].w3 = in<T>(w3[u]);
      units[u].b1 = biases ? in<T>(b1[u]) : nullptr;
      units[u].b2 = biases ? in<T>(b2[u]) : nullptr;
      units[u].b3 = biases ? in<T>(b3[u]) : nullptr;
      units[u].shape = shapes[u];
    }
    return units;
  };
  const auto plan = [](std::vector<ClWorkUnit<T>>& units) {
    return cl_worklist_plan(units.data(), int64_t(units.size()));
  };
  return cache.get(op, "these units'", std::move(key), w2[0].device(), describe, plan);
}

// Built and copied to the device once per set of (pointers, shapes) and cached like work_list's:
// the parameters keep their addresses, and the partial kernels and gradients a step makes afresh
// get the same blocks back from the caching allocator step after step, so a warmed-up step finds
// every table (no host-to-device copy, no synchronization; CUDA-graph capture refuses to build one).
template <typename T>
CkWorkList ck_work_list(const char* op, at::TensorList later, at::TensorList earlier, at::TensorList grad) {
  // A table per fold level and direction: a few per step forward and backward.
  DeviceTableCache<CkWorkPair<T>, CkWorkTotals>& cache = table_cache<CkWorkPair<T>, CkWorkTotals>(128);
  const size_t n = later.size();
  TORCH_CHECK(n > 0, op, ": no folds");
  TORCH_CHECK(earlier.size() == n, op, ": one earlier kernel per later kernel, got ", n, " and ", earlier.size());
  const bool backward = !grad.empty();
  TORCH_CHECK(!backward || grad.size() == n, op, ": one gradient per fold, got ", grad.size(), " for ", n, " folds");
  std::vector<CkShape> shapes;
  for (size_t u = 0; u < n; ++u) {
    check_tensor(op, "later", later[u], later[0], 4);
    const CkShape s = ck_shape(op, later[u], earlier[u]);
    if (backward) {
      check_weight(op, "grad", grad[u], later[0], 4);
      check_shape(op, "grad", grad[u], {s.o, s.i, s.a + s.b - 1, s.a2 + s.b2 - 1});
    }
    shapes.push_back(s);
  }
  std::vector<int64_t> key = {later[0].get_device(), int64_t(later[0].scalar_type()), int64_t(backward)};
  for (size_t u = 0; u < n; ++u) {
    const CkShape& s = shapes[u];
    key.insert(key.end(), {ptr(later[u]), ptr(earlier[u]), backward ? ptr(grad[u]) : 0, s.o, s.c, s.i, s.a, s.a2,
                           s.b, s.b2});
  }
  const auto describe = [&] {
    std::vector<CkWorkPair<T>> pairs(n);
    for (size_t u = 0; u < n; ++u) {
      pairs[u] = {};
      pairs[u].later = in<T>(later[u]);
      pairs[u].earlier = in<T>(earlier[u]);
      pairs[u].grad = backward ? in<T>(grad[u]) : nullptr;
      pairs[u].shape = shapes[u];
    }
    return pairs;
  };
  const auto plan = [n](std::vector<CkWorkPair<T>>& pairs) { return ck_worklist_plan(pairs.data(), int64_t(n)); };
  return cache.get(op, "these folds'", std::move(key), later[0].device(), describe, plan);
}

// The dtypes dispatch_compose runs the work lists in.
template WorkList work_list<float>(const char*, at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                                   at::TensorList, at::TensorList);
template WorkList work_list<double>(const char*, at::TensorList, at::TensorList, at::TensorList, at::TensorList,
                                    at::TensorList, at::TensorList);
template CkWorkList ck_work_list<float>(const char*, at::TensorList, at::TensorList, at::TensorList);
template CkWorkList ck_work_list<double>(const char*, at::TensorList, at::TensorList, at::TensorList);

}  // namespace expandnets::binding
