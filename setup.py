"""Installs expandnets_cuda and its reference, python_ref.

The package is pure Python today. The CUDA extension (csrc/) is built here once the CUDA backend
lands, and only where nvcc and a CUDA build of torch exist (EXPANDNETS_SKIP_CUDA=1 skips it).
"""
from setuptools import setup

setup(
    name="expandnets_cuda",
    version="0.1.0",
    description="Train ExpandNets (linearly over-parameterised CNNs) at the compact network's cost",
    packages=["expandnets_cuda", "python_ref"],
    python_requires=">=3.9",
    # torch is installed by scripts/setup_env.sh (pinned CPU wheel, or the CUDA build already
    # present): an unpinned requirement here would pull the CUDA wheels onto CPU machines.
    install_requires=[],
    extras_require={"test": ["pytest", "hypothesis", "pytest-benchmark", "numpy"]},
)
