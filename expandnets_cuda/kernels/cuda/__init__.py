"""The CUDA C++ backend: the kernels of ``csrc/`` behind ``torch.ops.expandnets.cuda_*``.

Imported only when the ``cuda`` backend is first asked for, and even then the compiled extension
(``expandnets_cuda._C``) is loaded only once everything it needs is known to be there: importing
this package never loads a library, touches a GPU or fails. ``load_composer()`` and
``load_convolver()`` raise ``BackendUnavailableError`` saying why the backend cannot run here.
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch

from expandnets_cuda.backends.types import BackendUnavailableError, ChainRunner, Composer, Convolver

BUILD_HINT = ("build it with `pip install --no-build-isolation .` (or `python setup.py build_ext --inplace`) "
              "on a machine with nvcc and a CUDA build of torch")

# The oldest GPUs the kernels target: bf16 and TF32 tensor cores (setup.py builds sm_80 and up).
MIN_CAPABILITY = (8, 0)


def unavailable_reason() -> Optional[str]:
    """Why the CUDA kernels cannot run here, or ``None`` if nothing is known to be missing."""
    cpu_only = torch.version.cuda is None
    if importlib.util.find_spec("expandnets_cuda._C") is None:
        torch_note = f" (and torch {torch.__version__} here is a CPU-only build)" if cpu_only else ""
        return f"the CUDA extension expandnets_cuda._C is not built{torch_note}; {BUILD_HINT}"
    if cpu_only:
        return (f"torch {torch.__version__} is a CPU-only build; the CUDA kernels need the CUDA build of torch "
                "that expandnets_cuda._C was built against")
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    capability = torch.cuda.get_device_capability()
    if capability < MIN_CAPABILITY:
        return (f"the CUDA kernels need compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer; "
                f"{torch.cuda.get_device_name()} has {capability[0]}.{capability[1]}")
    return None


def _require_extension() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    try:
        from expandnets_cuda.kernels.cuda import compose_ops  # noqa: F401  (load the extension, register fake impls and autograd)
        from expandnets_cuda.kernels.cuda import conv_ops  # noqa: F401  (load the extension, register fake impls and autograd)
    except (ImportError, OSError) as err:
        raise BackendUnavailableError(
            f"the CUDA extension expandnets_cuda._C does not load against torch {torch.__version__} ({err}); "
            f"rebuild it: {BUILD_HINT}") from err
    from expandnets_cuda.kernels.cuda.schemas import mismatches
    problems = mismatches()
    if problems:
        raise BackendUnavailableError(
            "the CUDA extension expandnets_cuda._C was built from other sources than this package: "
            f"{'; '.join(problems)}; rebuild it: {BUILD_HINT}")


def check_device(t: torch.Tensor) -> None:
    if t.device.type != "cuda":
        raise BackendUnavailableError(f"the CUDA kernels need CUDA tensors (got {t.device}); move the module "
                                      "to a GPU or pick another backend")


def _ops():
    _require_extension()
    from expandnets_cuda.kernels.cuda import ck_worklist_ops, compose_ops, conv_ops, worklist_ops
    from expandnets_cuda.kernels.stages import KernelOps
    return KernelOps(compose_ops.cl_compose, compose_ops.cl_bias_fold, compose_ops.ck_fold,
                     compose_ops.ck_fold_backward, worklist_ops.compose_cl_network,
                     ck_worklist_ops.compose_ck_network, conv_ops.conv2d, contiguous=True)


def load_composer() -> Composer:
    from expandnets_cuda.kernels.stages import kernel_composer
    return kernel_composer("cuda", _ops(), check_device, triton_kernels=False)


def load_convolver() -> Convolver:
    from expandnets_cuda.kernels.stages import kernel_convolver
    return kernel_convolver("cuda", _ops(), check_device, triton_kernels=False)


def load_chain() -> ChainRunner:
    convolver = load_convolver()
    from expandnets_cuda.kernels.cuda.chain_ops import chain
    return ChainRunner("cuda-chain", chain, convolver)
