// The Python module `expandnets_cuda._C`. It holds no functions: importing it loads this library,
// and loading runs the TORCH_LIBRARY registrations of the op files (compose.cpp, worklist.cpp,
// ck_worklist.cpp, conv.cpp, chain.cpp). Those define the CUDA kernels of the ops only: their fake
// (meta) implementations and autograd are registered from Python (expandnets_cuda/kernels/cuda/),
// next to the Triton ops that share the namespace.
#include <Python.h>

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
