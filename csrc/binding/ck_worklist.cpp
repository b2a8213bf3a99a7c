// The CK work-list ops: the folds of many CK units at one fold level per launch, on
// csrc/expandnets/ck_worklist.h and the cached device tables of worklist_tables.h.
#include <tuple>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "binding/checks.h"
#include "binding/tensors.h"
#include "binding/worklist_tables.h"
#include "expandnets/ck_worklist.h"

namespace {

using at::Tensor;
using namespace expandnets::binding;

// K of every fold (later[u], earlier[u]) back to back, each (o, i, a + b - 1, a2 + b2 - 1).
Tensor ck_network_fold(at::TensorList later, at::TensorList earlier) {
  constexpr const char* op = "expandnets::cuda_ck_network_fold";
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
std::tuple<Tensor, Tensor> ck_network_fold_backward(at::TensorList grad, at::TensorList later, at::TensorList earlier) {
  constexpr const char* op = "expandnets::cuda_ck_network_fold_backward";
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

}  // namespace

// Fake impls in the named module (see compose.cpp).
TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.kernels.cuda.ck_worklist_ops");
  m.def("cuda_ck_network_fold(Tensor[] later, Tensor[] earlier) -> Tensor");
  m.def("cuda_ck_network_fold_backward(Tensor[] grad, Tensor[] later, Tensor[] earlier) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_ck_network_fold", &ck_network_fold);
  m.impl("cuda_ck_network_fold_backward", &ck_network_fold_backward);
}
