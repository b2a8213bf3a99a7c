"""Installs expandnets_cuda with its reference and benchmarks; builds the CUDA extension where it can.

Three source folders make one installed package: ``expandnets_cuda/``, ``python_ref/`` (the
semantic definition) installed as ``expandnets_cuda.reference`` and ``bench/`` installed as
``expandnets_cuda.bench``, so nothing lands in site-packages under a generic top-level name
(``expandnets_cuda/_reference_binding.py``: how a checkout binds both names of the reference).

The extension ``expandnets_cuda._C`` (csrc/: the kernels; csrc/binding/: their torch binding) is
built with torch's CUDAExtension + BuildExtension (ninja) when torch is importable here, is a CUDA
build, and nvcc is found. Otherwise the pure-Python package is installed and the ``cuda`` backend says why it
is unavailable. torch must be visible to the build: use ``pip install --no-build-isolation .``.

Environment: ``EXPANDNETS_SKIP_CUDA=1`` skips the extension; ``CUDA_HOME`` the toolkit (default: the
one the ``nvcc`` on PATH runs from, found even where that ``nvcc`` is a wrapper script);
``TORCH_CUDA_ARCH_LIST`` picks the GPU
architectures (default "8.0;9.0", the oldest the kernels support is 8.0); ``MAX_JOBS`` caps the
parallel compile jobs.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0"


# What this build decided about the extension, written to expandnets_cuda/_build_info.json for
# `python -m expandnets_cuda.info` (the arch list is not recoverable from the built library).
BUILD_INFO = {"extension_configured": False, "skip_reason": None, "arch_list": None,
              "torch": None, "torch_cuda": None, "cuda_home": None}


def _skip(reason: str):
    print(f"expandnets_cuda: installing without the CUDA extension: {reason}", file=sys.stderr)
    BUILD_INFO["skip_reason"] = reason
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


def _has_cuda_headers(home) -> bool:
    return bool(home) and os.path.isfile(os.path.join(home, "include", "cuda_runtime_api.h"))


def _toolkit_of_nvcc():
    """The toolkit folder nvcc itself runs from (its ``TOP``), or None. torch guesses the CUDA home
    as the folder above the ``nvcc`` on PATH, which is wrong where that is a wrapper script (e.g.
    /usr/local/bin/nvcc calling /usr/local/cuda-13.0/bin/nvcc)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (dry.stdout + dry.stderr).splitlines():
        if line.startswith("#$ TOP="):
            return os.path.realpath(line.split("=", 1)[1].strip())
    return None


def _find_cuda_home() -> None:
    """Point torch's extension build at a toolkit with headers: CUDA_HOME / CUDA_PATH as set,
    else the toolkit nvcc runs from when the folder above ``nvcc`` on PATH has no headers."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if nvcc is None or _has_cuda_headers(os.path.dirname(os.path.dirname(nvcc))):
        return  # no nvcc on PATH (torch looks in /usr/local/cuda), or torch's guess is right
    top = _toolkit_of_nvcc()
    if _has_cuda_headers(top):
        print(f"expandnets_cuda: {nvcc} is not inside a CUDA toolkit; using the one it runs from: "
              f"CUDA_HOME={top}", file=sys.stderr)
        os.environ["CUDA_HOME"] = top


def _cuda_extension():
    """``(ext_modules, cmdclass)`` for the CUDA extension, or nothing with the reason printed."""
    if os.environ.get("EXPANDNETS_SKIP_CUDA", "0") not in ("", "0"):
        return _skip("EXPANDNETS_SKIP_CUDA is set")
    _find_cuda_home()  # before torch.utils.cpp_extension, which reads it once, on import
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as err:
        return _skip(f"torch is not importable in the build environment ({err}); "
                     "with pip, build with `pip install --no-build-isolation .`")
    BUILD_INFO.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    if torch.version.cuda is None:
        return _skip(f"torch {torch.__version__} is a CPU-only build")
    if cpp_extension.CUDA_HOME is None:
        return _skip("nvcc was not found (put it on PATH or set CUDA_HOME)")
    if not _has_cuda_headers(cpp_extension.CUDA_HOME):
        return _skip(f"the CUDA home {cpp_extension.CUDA_HOME} has no include/cuda_runtime_api.h; set CUDA_HOME "
                     "to the CUDA toolkit's folder (the one holding bin/nvcc and include/)")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    _check_arch_list(os.environ["TORCH_CUDA_ARCH_LIST"])
    BUILD_INFO.update(extension_configured=True, arch_list=os.environ["TORCH_CUDA_ARCH_LIST"],
                      cuda_home=cpp_extension.CUDA_HOME)
    kernels = sorted(os.path.relpath(path, HERE) for path in glob.glob(os.path.join(HERE, "csrc", "*.cu")))
    # The torch binding: one file per op family, the shared checks and work-list tables, the module.
    binding = sorted(os.path.relpath(path, HERE)
                     for path in glob.glob(os.path.join(HERE, "csrc", "binding", "*.cpp")))
    extension = cpp_extension.CUDAExtension(
        "expandnets_cuda._C",
        sources=[*binding, *kernels],
        include_dirs=[os.path.join(HERE, "csrc")],
        # -lineinfo: compute-sanitizer reports name source lines (scripts/gpu_ci.sh).
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
    )
    return [extension], {"build_ext": cpp_extension.BuildExtension}


def _write_build_info() -> None:
    with open(os.path.join(HERE, "expandnets_cuda", "_build_info.json"), "w") as out:
        json.dump(BUILD_INFO, out, indent=1)
        out.write("\n")


ext_modules, cmdclass = _cuda_extension()
_write_build_info()

# The folders that install under another name (source folder -> package).
MAPPED = {"expandnets_cuda.reference": "python_ref", "expandnets_cuda.bench": "bench"}

# torch: a range, not a pin, so an installed torch (the CPU 2.13.0 wheel, a CUDA build) is kept
# as it is. Its floor is the oldest torch the test suite has passed on: 2.11 (the lent GPUs' image;
# CI runs the suite under 2.11.0 and 2.13.0). Older ones may work, but nothing shows it.
# Where no torch is installed pip takes the newest release, on Linux a CUDA build of several GB:
# install the torch wanted first (scripts/setup_env.sh pins the CPU wheel 2.13.0 on CPU machines).
# numpy: torch warns "Failed to initialize NumPy" on every import without it.
INSTALL_REQUIRES = ["torch>=2.11", "numpy>=1.22"]
TRAIN = ["scikit-learn", "tqdm", "matplotlib"]  # the embedded digits data set, progress bars, curves
BENCH = ["tqdm", "matplotlib"]  # progress bars, the plot
EXPORT = ["onnx", "onnxscript", "onnxruntime"]  # torch's ONNX exporter, and the check in onnxruntime
EXTRAS = {
    "train": TRAIN,
    "bench": BENCH,
    "export": EXPORT,
    # The Triton interpreter (the CPU tests of the Triton kernels) turns 1-element arrays into
    # ints, which numpy 2.4 no longer allows; triton is the version the lent GPUs run.
    "test": sorted({"pytest", "hypothesis", "pytest-benchmark", "numpy<2.4",
                    "triton==3.6.0; platform_system == 'Linux'", *TRAIN, *BENCH, *EXPORT}),
}

setup(
    name="expandnets_cuda",
    version="0.1.0",
    description="Train ExpandNets (linearly over-parameterised CNNs) at the compact network's cost",
    packages=find_packages(include=["expandnets_cuda", "expandnets_cuda.*"]) + sorted(MAPPED),
    package_dir=MAPPED,
    package_data={"expandnets_cuda": ["_build_info.json"], "expandnets_cuda.bench": ["paper_tables.json"]},
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": [
        "expandnets-bench = expandnets_cuda._cli:bench",
        "expandnets-train = expandnets_cuda.train.__main__:main",
        "expandnets-info = expandnets_cuda.info:main",
        "expandnets-export = expandnets_cuda.deploy.export:main",
    ]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
