// The torch binding of the CUDA kernels: defines the expandnets::cuda_* ops, checks every argument
// with a clear message, allocates the outputs and runs the launchers of csrc/expandnets/ on the
// current CUDA stream. Fake (meta) implementations and autograd are registered from Python
// (expandnets_cuda/cuda_backend/), next to the Triton ops that share the namespace.
#include <Python.h>

#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "expandnets/chain.h"
#include "expandnets/ck_worklist.h"
#include "expandnets/compose.h"
#include "expandnets/conv.h"
#include "expandnets/worklist.h"

namespace {

using at::Tensor;
using expandnets::CkShape;
using expandnets::ClShape;
using expandnets::ConvShape;
using expandnets::Strides4;

template <typename T>
struct Tag {
  using type = T;
};

// f(Tag<T>{}) with T the kernels' scalar type for t's dtype: float32/float64 for the composition.
template <typename F>
void dispatch_compose(const char* op, const Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(Tag<float>{});
    case at::kDouble: return f(Tag<double>{});
    default:
      TORCH_CHECK(false, op, ": the composition runs in float32 or float64, got ", t.scalar_type(),
                  "; cast the weights first");
  }
}

// ... and float32/float64/float16/bfloat16 for the convolution.
template <typename F>
void dispatch_conv(const char* op, const Tensor& t, F&& f) {
  switch (t.scalar_type()) {
    case at::kFloat: return f(Tag<float>{});
    case at::kDouble: return f(Tag<double>{});
    case at::kHalf: return f(Tag<__half>{});
    case at::kBFloat16: return f(Tag<__nv_bfloat16>{});
    default:
      TORCH_CHECK(false, op, ": supported dtypes are float32, float64, float16 and bfloat16, got ", t.scalar_type());
  }
}

template <typename T>
const T* in(const Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}

template <typename T>
T* out(Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err),
              err == cudaErrorInvalidConfiguration ? " (a dimension exceeds the kernels' grid limits)" : "");
}

// Same device and dtype as `like`, on CUDA, with the given number of dimensions.
void check_tensor(const char* op, const char* name, const Tensor& t, const Tensor& like, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(), " but the other arguments are on ",
              like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but the other arguments have ", like.scalar_type());
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
}

void check_contiguous(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous() first); got strides ",
              t.strides());
}

void check_weight(const char* op, const char* name, const Tensor& t, const Tensor& like, int64_t dim) {
  check_tensor(op, name, t, like, dim);
  check_contiguous(op, name, t);
}

void check_shape(const char* op, const char* name, const Tensor& t, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", expected, ", got ", t.sizes());
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// --- composition -------------------------------------------------------------------------------

// w1 (G, A, I), w2 (G, C, A, T), w3 (G, O, C).
ClShape cl_shape(const char* op, const Tensor& w1, const Tensor& w2, const Tensor& w3) {
  check_weight(op, "w1", w1, w2, 3);
  check_weight(op, "w2", w2, w2, 4);
  check_weight(op, "w3", w3, w2, 3);
  const int64_t groups = w1.size(0), a = w1.size(1), i = w1.size(2);
  TORCH_CHECK(w2.size(0) == groups && w2.size(2) == a, op, ": w2 must be (groups, c, a, taps) with groups=", groups,
              " and a=", a, " as in w1 ", w1.sizes(), ", got ", w2.sizes());
  const int64_t c = w2.size(1), taps = w2.size(3);
  TORCH_CHECK(w3.size(0) == groups && w3.size(2) == c, op, ": w3 must be (groups, o, c) with groups=", groups,
              " and c=", c, " as in w2 ", w2.sizes(), ", got ", w3.sizes());
  return {groups, a, i, c, w3.size(1), taps};
}

Tensor cl_compose(const Tensor& w1, const Tensor& w2, const Tensor& w3) {
  constexpr const char* op = "expandnets::cuda_cl_compose";
  const ClShape s = cl_shape(op, w1, w2, w3);
  Tensor w = at::empty({s.groups, s.o, s.i, s.taps}, w2.options());
  const c10::cuda::CUDAGuard guard(w2.device());
  dispatch_compose(op, w2, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op,
                 expandnets::cl_compose_forward<T>(in<T>(w1), in<T>(w2), in<T>(w3), out<T>(w), s, current_stream()));
  });
  return w;
}

std::tuple<Tensor, Tensor, Tensor> cl_compose_backward(const Tensor& grad, const Tensor& w1, const Tensor& w2,
                                                       const Tensor& w3) {
  constexpr const char* op = "expandnets::cuda_cl_compose_backward";
  const ClShape s = cl_shape(op, w1, w2, w3);
  check_weight(op, "grad", grad, w2, 4);
  check_shape(op, "grad", grad, {s.groups, s.o, s.i, s.taps});
  Tensor dw1 = at::empty(w1.sizes(), w1.options()), dw2 = at::empty(w2.sizes(), w2.options());
  Tensor dw3 = at::empty(w3.sizes(), w3.options());
  const c10::cuda::CUDAGuard guard(w2.device());
  dispatch_compose(op, w2, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::cl_compose_backward<T>(in<T>(grad), in<T>(w1), in<T>(w2), in<T>(w3), out<T>(dw1),
                                                        out<T>(dw2), out<T>(dw3), s, current_stream()));
  });
  return {dw1, dw2, dw3};
}

// w2 (G, C, A, T), w3 (G, O, C), b1 (G, A), b2 (G, C), b3 (G, O) -> (G, O).
Tensor cl_bias_fold(const Tensor& w2, const Tensor& w3, const Tensor& b1, const Tensor& b2, const Tensor& b3) {
  constexpr const char* op = "expandnets::cuda_cl_bias_fold";
  check_weight(op, "w2", w2, w2, 4);
  check_weight(op, "w3", w3, w2, 3);
  const int64_t groups = w2.size(0), c = w2.size(1), a = w2.size(2), taps = w2.size(3), o = w3.size(1);
  check_shape(op, "w3", w3, {groups, o, c});
  const auto check_bias = [&](const char* name, const Tensor& b, int64_t n) {
    check_weight(op, name, b, w2, 2);
    check_shape(op, name, b, {groups, n});
  };
  check_bias("b1", b1, a);
  check_bias("b2", b2, c);
  check_bias("b3", b3, o);
  Tensor bias = at::empty({groups, o}, w2.options());
  const ClShape s{groups, a, 0, c, o, taps};
  const c10::cuda::CUDAGuard guard(w2.device());
  dispatch_compose(op, w2, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::cl_bias_fold<T>(in<T>(w2), in<T>(w3), in<T>(b1), in<T>(b2), in<T>(b3), out<T>(bias),
                                                 s, current_stream()));
  });
  return bias;
}

// later (O, C, a, a2), earlier (C, I, b, b2).
CkShape ck_shape(const char* op, const Tensor& later, const Tensor& earlier) {
  check_weight(op, "later", later, later, 4);
  check_weight(op, "earlier", earlier, later, 4);
  TORCH_CHECK(earlier.size(0) == later.size(1), op, ": earlier must have as many output channels (", earlier.size(0),
              ") as later has input channels (", later.size(1), "); later ", later.sizes(), ", earlier ",
              earlier.sizes());
  return {later.size(0), later.size(1), earlier.size(1), later.size(2), later.size(3), earlier.size(2),
          earlier.size(3)};
}

Tensor ck_fold(const Tensor& later, const Tensor& earlier) {
  constexpr const char* op = "expandnets::cuda_ck_fold";
  const CkShape s = ck_shape(op, later, earlier);
  Tensor kernel = at::empty({s.o, s.i, s.a + s.b - 1, s.a2 + s.b2 - 1}, later.options());
  const c10::cuda::CUDAGuard guard(later.device());
  dispatch_compose(op, later, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::ck_fold_forward<T>(in<T>(later), in<T>(earlier), out<T>(kernel), s, current_stream()));
  });
  return kernel;
}

std::tuple<Tensor, Tensor> ck_fold_backward(const Tensor& grad, const Tensor& later, const Tensor& earlier) {
  constexpr const char* op = "expandnets::cuda_ck_fold_backward";
  const CkShape s = ck_shape(op, later, earlier);
  check_weight(op, "grad", grad, later, 4);
  check_shape(op, "grad", grad, {s.o, s.i, s.a + s.b - 1, s.a2 + s.b2 - 1});
  Tensor d_later = at::empty(later.sizes(), later.options()), d_earlier = at::empty(earlier.sizes(), earlier.options());
  const c10::cuda::CUDAGuard guard(later.device());
  dispatch_compose(op, later, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::ck_fold_backward<T>(in<T>(grad), in<T>(later), in<T>(earlier), out<T>(d_later),
                                                     out<T>(d_earlier), s, current_stream()));
  });
  return {d_later, d_earlier};
}

// --- work-list composition ---------------------------------------------------------------------

// Per unit: w1 (G, A, I), w2 (G, C, A, T), w3 (G, O, C), biases (G, A), (G, C), (G, O) or all lists
// empty. Returns the checked shapes; every tensor on the device and of the dtype of w2[0].
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

// A planned descriptor table on the device, its totals, the stream it was allocated on, and whether
// a CUDA graph captured it (then the graph holds its address: it stays allocated for good).
template <typename Totals>
struct DeviceTable {
  Tensor table;
  Totals total;
  c10::Stream built_on;
  bool captured = false;
};

// Descriptor tables built and copied to the device once per key, the key holding every pointer and
// shape the table does: an entry found again is right whatever happened in between, and a step
// whose inputs stay where they are reuses it with no host-to-device copy and no synchronization,
// as CUDA-graph capture needs (a capture that misses is refused: `what` names the entries in the
// message). Past `max_tables` entries those no graph captured are dropped; the allocator frees
// them in stream order (record_stream for tables read elsewhere). Shared by the CL/FC and the CK
// work lists.
template <typename Entry, typename Totals>
class DeviceTableCache {
 public:
  explicit DeviceTableCache(size_t max_tables) : max_tables_(max_tables) {}

  // `plan(entries)` -> the totals, called on a miss with the host descriptors `describe()` made.
  template <typename Describe, typename Plan>
  DeviceTable<Totals> get(const char* op, const char* what, std::vector<int64_t> key, const at::Device& device,
                          Describe describe, Plan plan) {
    const c10::Stream stream = c10::cuda::getCurrentCUDAStream();
    const bool capturing = c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
    const std::lock_guard<std::mutex> lock(mutex_);
    if (const auto found = cache_.find(key); found != cache_.end()) {
      DeviceTable<Totals>& list = found->second;
      if (capturing) {
        list.captured = true;
      } else if (stream != list.built_on) {
        list.table.record_stream(stream);
      }
      return list;
    }
    TORCH_CHECK(!capturing, op, ": ", what,
                " work list is not built yet, and building it copies to the device, which a CUDA graph capture "
                "cannot do: run one step (forward and backward) before capturing");
    std::vector<Entry> entries = describe();
    DeviceTable<Totals> list{Tensor(), plan(entries), stream};
    const int64_t bytes = int64_t(entries.size() * sizeof(Entry));
    Tensor host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(host.mutable_data_ptr(), entries.data(), size_t(bytes));
    list.table = host.to(device);
    if (cache_.size() >= max_tables_) {
      for (auto it = cache_.begin(); it != cache_.end();) it = it->second.captured ? std::next(it) : cache_.erase(it);
    }
    cache_.emplace(std::move(key), list);
    return list;
  }

 private:
  const size_t max_tables_;
  std::mutex mutex_;
  std::map<std::vector<int64_t>, DeviceTable<Totals>> cache_;
};

using WorkList = DeviceTable<expandnets::ClWorkTotals>;

// The table of these units, cached per set of (pointers, shapes) (DeviceTableCache): parameters
// updated in place keep their table. Past 64 tables (inputs that move every step, e.g. copies of
// non-contiguous ones) the uncaptured ones are dropped.
template <typename T>
WorkList work_list(const char* op, at::TensorList w1, at::TensorList w2, at::TensorList w3, at::TensorList b1,
                   at::TensorList b2, at::TensorList b3) {
  static DeviceTableCache<expandnets::ClWorkUnit<T>, expandnets::ClWorkTotals> cache(64);
  const std::vector<ClShape> shapes = work_shapes(op, w1, w2, w3, b1, b2, b3);
  const bool biases = !b1.empty();
  const auto ptr = [](const Tensor& t) { return reinterpret_cast<int64_t>(t.const_data_ptr()); };
  std::vector<int64_t> key = {w2[0].get_device(), int64_t(w2[0].scalar_type()), int64_t(biases)};
  for (size_t u = 0; u < shapes.size(); ++u) {
    const ClShape& s = shapes[u];
    key.insert(key.end(), {ptr(w1[u]), ptr(w2[u]), ptr(w3[u]), s.groups, s.a, s.i, s.c, s.o, s.taps});
    if (biases) key.insert(key.end(), {ptr(b1[u]), ptr(b2[u]), ptr(b3[u])});
  }
  const auto describe = [&] {
    std::vector<expandnets::ClWorkUnit<T>> units(shapes.size());
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
  const auto plan = [](std::vector<expandnets::ClWorkUnit<T>>& units) {
    return expandnets::cl_worklist_plan(units.data(), int64_t(units.size()));
  };
  return cache.get(op, "these units'", std::move(key), w2[0].device(), describe, plan);
}

template <typename T>
const expandnets::ClWorkUnit<T>* work_table(const WorkList& list) {
  return static_cast<const expandnets::ClWorkUnit<T>*>(list.table.const_data_ptr());
}

// (W of every unit back to back, their biases back to back or an empty tensor without biases).
std::tuple<Tensor, Tensor> cl_many(at::TensorList w1, at::TensorList w2, at::TensorList w3, at::TensorList b1,
                                   at::TensorList b2, at::TensorList b3) {
  constexpr const char* op = "expandnets::cuda_cl_many";
  TORCH_CHECK(!w2.empty(), op, ": no units");
  const c10::cuda::CUDAGuard guard(w2[0].device());
  Tensor w, bias;
  dispatch_compose(op, w2[0], [&](auto tag) {
    using T = typename decltype(tag)::type;
    const WorkList list = work_list<T>(op, w1, w2, w3, b1, b2, b3);
    w = at::empty({list.total.w}, w2[0].options());
    bias = at::empty({b1.empty() ? 0 : list.total.bias}, w2[0].options());
    check_launch(op, expandnets::cl_worklist_forward<T>(work_table<T>(list), int64_t(w2.size()), list.total, out<T>(w),
                                                        b1.empty() ? nullptr : out<T>(bias), current_stream()));
  });
  return {w, bias};
}

// (dw1, dw2, dw3, db1, db2) back to back over the units, the bias ones empty without biases
// (db3 is grad_bias); grad_w and grad_bias flat as cl_many returns them.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> cl_many_backward(const Tensor& grad_w, const Tensor& grad_bias,
                                                                    at::TensorList w1, at::TensorList w2,
                                                                    at::TensorList w3, at::TensorList b1,
                                                                    at::TensorList b2, at::TensorList b3) {
  constexpr const char* op = "expandnets::cuda_cl_many_backward";
  TORCH_CHECK(!w2.empty(), op, ": no units");
  const bool biases = !b1.empty();
  const c10::cuda::CUDAGuard guard(w2[0].device());
  Tensor dw1, dw2, dw3, db1, db2;
  dispatch_compose(op, w2[0], [&](auto tag) {
    using T = typename decltype(tag)::type;
    const WorkList list = work_list<T>(op, w1, w2, w3, b1, b2, b3);
    const expandnets::ClWorkTotals& total = list.total;
    check_weight(op, "grad_w", grad_w, w2[0], 1);
    check_shape(op, "grad_w", grad_w, {total.w});
    if (biases) {
      check_weight(op, "grad_bias", grad_bias, w2[0], 1);
      check_shape(op, "grad_bias", grad_bias, {total.bias});
    }
    const auto options = w2[0].options();
    dw1 = at::empty({total.w1}, options);
    dw2 = at::empty({total.w2}, options);
    dw3 = at::empty({total.w3}, options);
    db1 = at::empty({biases ? total.a : 0}, options);
    db2 = at::empty({biases ? total.c : 0}, options);
    Tensor inner = at::empty({biases ? total.c : 0}, options);
    check_launch(op, expandnets::cl_worklist_backward<T>(
                         work_table<T>(list), int64_t(w2.size()), total, in<T>(grad_w),
                         biases ? in<T>(grad_bias) : nullptr, out<T>(dw1), out<T>(dw2), out<T>(dw3),
                         biases ? out<T>(db1) : nullptr, biases ? out<T>(db2) : nullptr,
                         biases ? out<T>(inner) : nullptr, current_stream()));
  });
  return {dw1, dw2, dw3, db1, db2};
}

// --- CK work list ------------------------------------------------------------------------------

// A planned table of folds on the device, as WorkList for the CL/FC units.
using CkWorkList = DeviceTable<expandnets::CkWorkTotals>;

// The table of these folds (later[u], earlier[u] and, for the backward, grad[u]), built and copied
// to the device once per set of (pointers, shapes) and cached like work_list's: the parameters
// keep their addresses, and the partial kernels and gradients a step makes afresh get the same
// blocks back from the caching allocator step after step, so a warmed-up step finds every table
// (no host-to-device copy, no synchronization; CUDA-graph capture refuses to build one).
template <typename T>
CkWorkList ck_work_list(const char* op, at::TensorList later, at::TensorList earlier, at::TensorList grad) {
  // A table per fold level and direction: a few per step forward and backward.
  static DeviceTableCache<expandnets::CkWorkPair<T>, expandnets::CkWorkTotals> cache(128);
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
  const auto ptr = [](const Tensor& t) { return reinterpret_cast<int64_t>(t.const_data_ptr()); };
  std::vector<int64_t> key = {later[0].get_device(), int64_t(later[0].scalar_type()), int64_t(backward)};
  for (size_t u = 0; u < n; ++u) {
    const CkShape& s = shapes[u];
    key.insert(key.end(), {ptr(later[u]), ptr(earlier[u]), backward ? ptr(grad[u]) : 0, s.o, s.c, s.i, s.a, s.a2,
                           s.b, s.b2});
  }
  const auto describe = [&] {
    std::vector<expandnets::CkWorkPair<T>> pairs(n);
    for (size_t u = 0; u < n; ++u) {
      pairs[u] = {};
      pairs[u].later = in<T>(later[u]);
      pairs[u].earlier = in<T>(earlier[u]);
      pairs[u].grad = backward ? in<T>(grad[u]) : nullptr;
      pairs[u].shape = shapes[u];
    }
    return pairs;
  };
  const auto plan = [n](std::vector<expandnets::CkWorkPair<T>>& pairs) {
    return expandnets::ck_worklist_plan(pairs.data(), int64_t(n));
  };
  return cache.get(op, "these folds'", std::move(key), later[0].device(), describe, plan);
}

template <typename T>
const expandnets::CkWorkPair<T>* ck_work_table(const CkWorkList& list) {
  return static_cast<const expandnets::CkWorkPair<T>*>(list.table.const_data_ptr());
}

// K of every fold (later[u], earlier[u]) back to back, each (o, i, a + b - 1, a2 + b2 - 1).
Tensor ck_many_fold(at::TensorList later, at::TensorList earlier) {
  constexpr const char* op = "expandnets::cuda_ck_many_fold";
  TORCH_CHECK(!later.empty(), op, ": no folds");
  const c10::cuda::CUDAGuard guard(later[0].device());
  Tensor k;
  dispatch_compose(op, later[0], [&](auto tag) {
    using T = typename decltype(tag)::type;
    const CkWorkList list = ck_work_list<T>(op, later, earlier, {});
    k = at::empty({list.total.k}, later[0].options());
    check_launch(op, expandnets::ck_worklist_forward<T>(ck_work_table<T>(list), int64_t(later.size()), list.total,
                                                        out<T>(k), current_stream()));
  });
  return k;
}

// (d later of every fold back to back, d earlier of every fold back to back) from grad[u], the
// gradient of fold u's K.
std::tuple<Tensor, Tensor> ck_many_fold_backward(at::TensorList grad, at::TensorList later, at::TensorList earlier) {
  constexpr const char* op = "expandnets::cuda_ck_many_fold_backward";
  TORCH_CHECK(!later.empty(), op, ": no folds");
  TORCH_CHECK(grad.size() == later.size(), op, ": one gradient per fold, got ", grad.size(), " for ", later.size(),
              " folds");
  const c10::cuda::CUDAGuard guard(later[0].device());
  Tensor d_later, d_earlier;
  dispatch_compose(op, later[0], [&](auto tag) {
    using T = typename decltype(tag)::type;
    const CkWorkList list = ck_work_list<T>(op, later, earlier, grad);
    d_later = at::empty({list.total.later}, later[0].options());
    d_earlier = at::empty({list.total.earlier}, later[0].options());
    check_launch(op, expandnets::ck_worklist_backward<T>(ck_work_table<T>(list), int64_t(later.size()), list.total,
                                                         out<T>(d_later), out<T>(d_earlier), current_stream()));
  });
  return {d_later, d_earlier};
}

// --- convolution -------------------------------------------------------------------------------

Strides4 strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// A new tensor in x's memory format (channels_last stays channels_last), as the fake impl says.
Tensor empty_like_layout(const Tensor& x, at::IntArrayRef sizes) {
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  return at::empty(sizes, x.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                  : at::MemoryFormat::Contiguous));
}

ConvShape conv_shape(const char* op, const Tensor& x, const Tensor& w, at::IntArrayRef stride,
                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_tensor(op, "x", x, x, 4);
  check_weight(op, "weight", w, x, 4);
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              ": stride, padding and dilation need 2 entries each, got ", stride, ", ", padding, ", ", dilation);
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 && padding[0] >= 0 &&
                  padding[1] >= 0,
              op, ": stride and dilation must be >= 1 and padding >= 0, got stride ", stride, ", padding ", padding,
              ", dilation ", dilation);
  TORCH_CHECK(groups >= 1 && groups <= 65535, op, ": groups must be in [1, 65535], got ", groups);
  TORCH_CHECK(x.size(1) % groups == 0 && w.size(0) % groups == 0 && w.size(1) * groups == x.size(1), op,
              ": weight ", w.sizes(), " with groups=", groups, " does not fit an input with ", x.size(1), " channels");
  const int64_t span_h = x.size(2) + 2 * padding[0] - dilation[0] * (w.size(2) - 1) - 1;
  const int64_t span_w = x.size(3) + 2 * padding[1] - dilation[1] * (w.size(3) - 1) - 1;
  TORCH_CHECK(span_h >= 0 && span_w >= 0, op, ": the padded input ", x.sizes(), " (padding ", padding,
              ") is smaller than the dilated kernel ", w.sizes(), " (dilation ", dilation, ")");
  ConvShape s;
  s.batch = x.size(0);
  s.channels = x.size(1);
  s.height = x.size(2);
  s.width = x.size(3);
  s.out_channels = w.size(0);
  s.out_height = span_h / stride[0] + 1;
  s.out_width = span_w / stride[1] + 1;
  s.kernel_h = w.size(2);
  s.kernel_w = w.size(3);
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.groups = groups;
  return s;
}

Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool exact) {
  constexpr const char* op = "expandnets::cuda_conv2d";
  const ConvShape s = conv_shape(op, x, w, stride, padding, dilation, groups);
  if (b.has_value()) {
    check_weight(op, "bias", *b, x, 1);
    check_shape(op, "bias", *b, {s.out_channels});
  }
  Tensor y = empty_like_layout(x, {s.batch, s.out_channels, s.out_height, s.out_width});
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::conv2d_forward<T>(in<T>(x), strides_of(x), in<T>(w), b ? in<T>(*b) : nullptr,
                                                   out<T>(y), strides_of(y), s, !exact, current_stream()));
  });
  return y;
}

// (dx, dweight, dbias); dbias is empty when the convolution has no bias.
std::tuple<Tensor, Tensor, Tensor> conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, bool has_bias,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, int64_t groups, bool exact) {
  constexpr const char* op = "expandnets::cuda_conv2d_backward";
  const ConvShape s = conv_shape(op, x, w, stride, padding, dilation, groups);
  check_tensor(op, "grad", dy, x, 4);
  check_shape(op, "grad", dy, {s.batch, s.out_channels, s.out_height, s.out_width});
  Tensor dx = empty_like_layout(x, x.sizes());
  Tensor dw = at::empty(w.sizes(), w.options());
  Tensor db = at::empty({has_bias ? s.out_channels : 0}, x.options());
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const cudaStream_t stream = current_stream();
    check_launch(op, expandnets::conv2d_input_grad<T>(in<T>(dy), strides_of(dy), in<T>(w), out<T>(dx), strides_of(dx),
                                                      s, !exact, stream));
    Tensor workspace = at::empty({int64_t(expandnets::conv2d_weight_grad_workspace_bytes<T>(s))},
                                 x.options().dtype(at::kByte));
    check_launch(op, expandnets::conv2d_weight_grad<T>(in<T>(x), strides_of(x), in<T>(dy), strides_of(dy), out<T>(dw),
                                                       has_bias ? out<T>(db) : nullptr, workspace.mutable_data_ptr(),
                                                       s, !exact, stream));
  });
  return {dx, dw, db};
}

// --- chain-fused units -------------------------------------------------------------------------

// x (N, G*mg, H, W); w1 (G*a, mg, k1h, k1w); w2 (G*c, a, kh, kw); w3 (G*o, c, 1, 1) or none; biases
// all or none; pads (left, right, top, bottom) zero padding of the unit's input.
expandnets::ChainShape chain_shape(const char* op, const Tensor& x, const Tensor& w1, const std::optional<Tensor>& b1,
                                   const Tensor& w2, const std::optional<Tensor>& b2, const std::optional<Tensor>& w3,
                                   const std::optional<Tensor>& b3, at::IntArrayRef pads, at::IntArrayRef dilation1,
                                   at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups, bool relu) {
  check_tensor(op, "x", x, x, 4);
  check_weight(op, "w1", w1, x, 4);
  check_weight(op, "w2", w2, x, 4);
  TORCH_CHECK(pads.size() == 4 && dilation1.size() == 2 && stride.size() == 2 && dilation.size() == 2, op,
              ": pads needs 4 entries (left, right, top, bottom), dilation1, stride and dilation 2 each");
  TORCH_CHECK(pads[0] >= 0 && pads[1] >= 0 && pads[2] >= 0 && pads[3] >= 0 && stride[0] >= 1 && stride[1] >= 1 &&
                  dilation[0] >= 1 && dilation[1] >= 1 && dilation1[0] >= 1 && dilation1[1] >= 1,
              op, ": pads must be >= 0, strides and dilations >= 1");
  TORCH_CHECK(groups >= 1 && groups <= 65535, op, ": groups must be in [1, 65535], got ", groups);
  TORCH_CHECK(b1.has_value() == b2.has_value() && (!w3.has_value() || b1.has_value() == b3.has_value()), op,
              ": the biases must be all given or all absent");
  expandnets::ChainShape s{};
  s.batch = x.size(0);
  s.groups = groups;
  s.mg = w1.size(1);
  TORCH_CHECK(w1.size(0) % groups == 0 && w2.size(0) % groups == 0 && s.mg * groups == x.size(1), op, ": w1 ",
              w1.sizes(), " with groups=", groups, " does not fit an input with ", x.size(1), " channels");
  s.a = w1.size(0) / groups;
  s.c = w2.size(0) / groups;
  TORCH_CHECK(w2.size(1) == s.a, op, ": w2 ", w2.sizes(), " must take ", s.a, " channels per group (w1 ", w1.sizes(),
              ")");
  s.o = 0;
  if (w3.has_value()) {
    check_weight(op, "w3", *w3, x, 4);
    TORCH_CHECK(w3->size(0) % groups == 0 && w3->size(1) == s.c && w3->size(2) == 1 && w3->size(3) == 1, op,
                ": w3 must be (groups*o, ", s.c, ", 1, 1), got ", w3->sizes());
    s.o = w3->size(0) / groups;
  }
  s.k1h = w1.size(2);
  s.k1w = w1.size(3);
  TORCH_CHECK(s.k1h * s.k1w == 1 || groups == 1, op, ": a KxK first layer needs groups=1");
  s.height = x.size(2);
  s.width = x.size(3);
  s.pad_left = pads[0];
  s.pad_top = pads[2];
  s.d1h = dilation1[0];
  s.d1w = dilation1[1];
  s.kh = w2.size(2);
  s.kw = w2.size(3);
  s.sh = stride[0];
  s.sw = stride[1];
  s.dh = dilation[0];
  s.dw = dilation[1];
  s.h1 = s.height + pads[2] + pads[3] - s.d1h * (s.k1h - 1);
  s.w1 = s.width + pads[0] + pads[1] - s.d1w * (s.k1w - 1);
  const int64_t span_h = s.h1 - s.dh * (s.kh - 1) - 1, span_w = s.w1 - s.dw * (s.kw - 1) - 1;
  TORCH_CHECK(s.h1 >= 1 && s.w1 >= 1 && span_h >= 0 && span_w >= 0, op, ": the padded input ", x.sizes(), " (pads ",
              pads, ") is smaller than the unit's receptive field");
  s.out_h = span_h / s.sh + 1;
  s.out_w = span_w / s.sw + 1;
  const auto check_bias = [&](const char* name, const std::optional<Tensor>& b, int64_t n) {
    if (!b.has_value()) return;
    check_weight(op, name, *b, x, 1);
    check_shape(op, name, *b, {groups * n});
  };
  check_bias("b1", b1, s.a);
  check_bias("b2", b2, s.c);
  if (w3.has_value()) check_bias("b3", b3, s.o);
  s.has_bias = b1.has_value();
  s.relu = relu;
  return s;
}

template <typename T>
const T* in_or_null(const std::optional<Tensor>& t) {
  return t.has_value() ? in<T>(*t) : nullptr;
}

// `exact` is accepted for the Triton op's signature; the chain kernels always run plain FMA.
Tensor chain(const Tensor& x, const Tensor& w1, const std::optional<Tensor>& b1, const Tensor& w2,
             const std::optional<Tensor>& b2, const std::optional<Tensor>& w3, const std::optional<Tensor>& b3,
             at::IntArrayRef pads, at::IntArrayRef dilation1, at::IntArrayRef stride, at::IntArrayRef dilation,
             int64_t groups, bool relu, bool /*exact*/) {
  constexpr const char* op = "expandnets::cuda_chain";
  const expandnets::ChainShape s = chain_shape(op, x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation,
                                               groups, relu);
  Tensor y = empty_like_layout(x, {s.batch, groups * (s.o > 0 ? s.o : s.c), s.out_h, s.out_w});
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    check_launch(op, expandnets::chain_forward<T>(in<T>(x), strides_of(x), in<T>(w1), in_or_null<T>(b1), in<T>(w2),
                                                  in_or_null<T>(b2), in_or_null<T>(w3), in_or_null<T>(b3), out<T>(y),
                                                  strides_of(y), s, current_stream()));
  });
  return y;
}

// (dx, dw1, db1, dw2, db2, dw3, db3); the gradients of absent tensors are empty.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> chain_backward(
    const Tensor& dy, const Tensor& x, const Tensor& w1, const std::optional<Tensor>& b1, const Tensor& w2,
    const std::optional<Tensor>& b2, const std::optional<Tensor>& w3, const std::optional<Tensor>& b3,
    at::IntArrayRef pads, at::IntArrayRef dilation1, at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
    bool relu, bool /*exact*/) {
  constexpr const char* op = "expandnets::cuda_chain_backward";
  const expandnets::ChainShape s = chain_shape(op, x, w1, b1, w2, b2, w3, b3, pads, dilation1, stride, dilation,
                                               groups, relu);
  check_tensor(op, "grad", dy, x, 4);
  check_shape(op, "grad", dy, {s.batch, groups * (s.o > 0 ? s.o : s.c), s.out_h, s.out_w});
  const auto like = [&](const std::optional<Tensor>& t) {
    return t.has_value() ? at::empty(t->sizes(), t->options()) : at::empty({0}, x.options());
  };
  Tensor dx = empty_like_layout(x, x.sizes());
  Tensor dw1 = at::empty(w1.sizes(), w1.options()), dw2 = at::empty(w2.sizes(), w2.options());
  Tensor db1 = like(b1), db2 = like(b2), dw3 = like(w3), db3 = like(w3.has_value() ? b3 : std::nullopt);
  const c10::cuda::CUDAGuard guard(x.device());
  dispatch_conv(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Tensor workspace = at::empty({int64_t(expandnets::chain_backward_workspace_bytes<T>(s))},
                                 x.options().dtype(at::kByte));
    const auto maybe = [&](Tensor& t, bool present) { return present ? out<T>(t) : static_cast<T*>(nullptr); };
    check_launch(op, expandnets::chain_backward<T>(
                         in<T>(dy), strides_of(dy), in<T>(x), strides_of(x), in<T>(w1), in_or_null<T>(b1), in<T>(w2),
                         in_or_null<T>(b2), in_or_null<T>(w3), out<T>(dx), strides_of(dx), out<T>(dw1),
                         maybe(db1, s.has_bias), out<T>(dw2), maybe(db2, s.has_bias), maybe(dw3, s.o > 0),
                         maybe(db3, s.has_bias && s.o > 0), workspace.mutable_data_ptr(), s, current_stream()));
  });
  return {dx, dw1, db1, dw2, db2, dw3, db3};
}

}  // namespace

// `import expandnets_cuda._C` loads this library; the registrations below run as it loads.
PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT,
                               "_C",
                               "CUDA kernels of expandnets_cuda; the ops live under torch.ops.expandnets.cuda_*",
                               -1,
                               nullptr,
                               nullptr,
                               nullptr,
                               nullptr,
                               nullptr};
  return PyModule_Create(&module);
}

// Fragments: the Triton backend defines its ops in the same namespace from Python. Each block
// names the Python module holding its ops' fake impls, which torch imports when it needs them.
TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.cuda_backend.compose_ops");
  m.def("cuda_cl_compose(Tensor w1, Tensor w2, Tensor w3) -> Tensor");
  m.def("cuda_cl_compose_backward(Tensor grad, Tensor w1, Tensor w2, Tensor w3) -> (Tensor, Tensor, Tensor)");
  m.def("cuda_cl_bias_fold(Tensor w2, Tensor w3, Tensor b1, Tensor b2, Tensor b3) -> Tensor");
  m.def("cuda_ck_fold(Tensor later, Tensor earlier) -> Tensor");
  m.def("cuda_ck_fold_backward(Tensor grad, Tensor later, Tensor earlier) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.cuda_backend.ck_worklist_ops");
  m.def("cuda_ck_many_fold(Tensor[] later, Tensor[] earlier) -> Tensor");
  m.def("cuda_ck_many_fold_backward(Tensor[] grad, Tensor[] later, Tensor[] earlier) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.cuda_backend.worklist_ops");
  m.def("cuda_cl_many(Tensor[] w1, Tensor[] w2, Tensor[] w3, Tensor[] b1, Tensor[] b2, Tensor[] b3) "
        "-> (Tensor, Tensor)");
  m.def("cuda_cl_many_backward(Tensor grad_w, Tensor grad_bias, Tensor[] w1, Tensor[] w2, Tensor[] w3, "
        "Tensor[] b1, Tensor[] b2, Tensor[] b3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.cuda_backend.conv_ops");
  m.def("cuda_conv2d(Tensor x, Tensor w, Tensor? b, int[] stride, int[] padding, int[] dilation, int groups, "
        "bool exact) -> Tensor");
  m.def("cuda_conv2d_backward(Tensor grad, Tensor x, Tensor w, bool has_bias, int[] stride, int[] padding, "
        "int[] dilation, int groups, bool exact) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_cl_compose", &cl_compose);
  m.impl("cuda_cl_compose_backward", &cl_compose_backward);
  m.impl("cuda_cl_bias_fold", &cl_bias_fold);
  m.impl("cuda_ck_fold", &ck_fold);
  m.impl("cuda_ck_fold_backward", &ck_fold_backward);
  m.impl("cuda_conv2d", &conv2d);
  m.impl("cuda_conv2d_backward", &conv2d_backward);
  m.impl("cuda_cl_many", &cl_many);
  m.impl("cuda_cl_many_backward", &cl_many_backward);
  m.impl("cuda_ck_many_fold", &ck_many_fold);
  m.impl("cuda_ck_many_fold_backward", &ck_many_fold_backward);
}

TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.cuda_backend.chain_ops");
  m.def("cuda_chain(Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, Tensor? w3, Tensor? b3, int[] pads, "
        "int[] dilation1, int[] stride, int[] dilation, int groups, bool relu, bool exact) -> Tensor");
  m.def("cuda_chain_backward(Tensor grad, Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, Tensor? w3, "
        "Tensor? b3, int[] pads, int[] dilation1, int[] stride, int[] dilation, int groups, bool relu, bool exact) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_chain", &chain);
  m.impl("cuda_chain_backward", &chain_backward);
}
