// The CL/FC work-list ops: many units of different shapes composed per launch, on
// csrc/expandnets/worklist.h and the cached device tables of worklist_tables.h.
#include <tuple>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "binding/checks.h"
#include "binding/tensors.h"
#include "binding/worklist_tables.h"
#include "expandnets/worklist.h"

namespace {

using at::Tensor;
using namespace expandnets::binding;

// (W of every unit back to back, their biases back to back or an empty tensor without biases).
std::tuple<Tensor, Tensor> cl_network(at::TensorList w1, at::TensorList w2, at::TensorList w3, at::TensorList b1,
                                   at::TensorList b2, at::TensorList b3) {
  constexpr const char* op = "expandnets::cuda_cl_network";
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
// (db3 is grad_bias); grad_w and grad_bias flat as cl_network returns them.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> cl_network_backward(const Tensor& grad_w, const Tensor& grad_bias,
                                                                    at::TensorList w1, at::TensorList w2,
                                                                    at::TensorList w3, at::TensorList b1,
                                                                    at::TensorList b2, at::TensorList b3) {
  constexpr const char* op = "expandnets::cuda_cl_network_backward";
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

}  // namespace

// Fake impls in the named module (see compose.cpp).
TORCH_LIBRARY_FRAGMENT(expandnets, m) {
  m.set_python_module("expandnets_cuda.kernels.cuda.worklist_ops");
  m.def("cuda_cl_network(Tensor[] w1, Tensor[] w2, Tensor[] w3, Tensor[] b1, Tensor[] b2, Tensor[] b3) "
        "-> (Tensor, Tensor)");
  m.def("cuda_cl_network_backward(Tensor grad_w, Tensor grad_bias, Tensor[] w1, Tensor[] w2, Tensor[] w3, "
        "Tensor[] b1, Tensor[] b2, Tensor[] b3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(expandnets, CUDA, m) {
  m.impl("cuda_cl_network", &cl_network);
  m.impl("cuda_cl_network_backward", &cl_network_backward);
}
