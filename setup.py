"""Installs expandnets_cuda and its reference, python_ref; builds the CUDA extension where it can.

The extension ``expandnets_cuda._C`` (csrc/: the kernels and their torch binding) is built with
torch's CUDAExtension + BuildExtension (ninja) when torch is importable here, is a CUDA build, and
nvcc is found. Otherwise the pure-Python package is installed and the ``cuda`` backend says why it
is unavailable. torch must be visible to the build: use ``pip install --no-build-isolation .``.

Environment: ``EXPANDNETS_SKIP_CUDA=1`` skips the extension; ``TORCH_CUDA_ARCH_LIST`` picks the GPU
architectures (default "8.0;9.0", the oldest the kernels support is 8.0); ``MAX_JOBS`` caps the
parallel compile jobs.
"""
import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0"


def _skip(reason: str):
    print(f"expandnets_cuda: installing without the CUDA extension: {reason}", file=sys.stderr)
    return [], {}


def _check_arch_list(arch_list: str) -> None:
    """The kernels use bf16 and TF32 tensor cores: refuse architectures older than sm_80 early."""
    for arch in arch_list.replace(";", " ").split():
        number = arch.split("+")[0]
        try:
            too_old = float(number) < 8.0
        except ValueError:  # named (e.g. "Hopper") or suffixed (e.g. "9.0a") entries: torch validates them
            continue
        if too_old:
            raise SystemExit(f"expandnets_cuda: TORCH_CUDA_ARCH_LIST={arch_list!r} has {arch}; the CUDA kernels "
                             "need compute capability 8.0 or newer (or set EXPANDNETS_SKIP_CUDA=1)")


def _cuda_extension():
    """``(ext_modules, cmdclass)`` for the CUDA extension, or nothing with the reason printed."""
    if os.environ.get("EXPANDNETS_SKIP_CUDA", "0") not in ("", "0"):
        return _skip("EXPANDNETS_SKIP_CUDA is set")
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as err:
        return _skip(f"torch is not importable in the build environment ({err}); "
                     "with pip, build with `pip install --no-build-isolation .`")
    if torch.version.cuda is None:
        return _skip(f"torch {torch.__version__} is a CPU-only build")
    if cpp_extension.CUDA_HOME is None:
        return _skip("nvcc was not found (put it on PATH or set CUDA_HOME)")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    _check_arch_list(os.environ["TORCH_CUDA_ARCH_LIST"])
    kernels = sorted(os.path.relpath(path, HERE) for path in glob.glob(os.path.join(HERE, "csrc", "*.cu")))
    extension = cpp_extension.CUDAExtension(
        "expandnets_cuda._C",
        sources=[os.path.join("csrc", "binding.cpp"), *kernels],
        include_dirs=[os.path.join(HERE, "csrc")],
        # -lineinfo: compute-sanitizer reports name source lines (scripts/gpu_ci.sh).
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
    )
    return [extension], {"build_ext": cpp_extension.BuildExtension}


ext_modules, cmdclass = _cuda_extension()

setup(
    name="expandnets_cuda",
    version="0.1.0",
    description="Train ExpandNets (linearly over-parameterised CNNs) at the compact network's cost",
    packages=find_packages(include=["expandnets_cuda", "expandnets_cuda.*", "python_ref"]),
    python_requires=">=3.9",
    # torch is installed by scripts/setup_env.sh (pinned CPU wheel, or the CUDA build already
    # present): an unpinned requirement here would pull the CUDA wheels onto CPU machines.
    install_requires=[],
    extras_require={"test": ["pytest", "hypothesis", "pytest-benchmark", "numpy"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
