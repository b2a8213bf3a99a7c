#!/usr/bin/env bash
# The lent GPU image has torch, triton and ninja but no network and maybe not the test tools.
# Run this HERE (with network) to put the pure-Python test dependencies, built for the GPU
# image's Python 3.12, into .gpu_deps/ (git-ignored), then pass carry=[".gpu_deps"] to the device
# tool; scripts/gpu_session.sh puts it on PYTHONPATH. (scikit-learn/scipy for the digits
# training bench are too large to carry; that step is skipped there when they are missing.)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu_deps
python3 -m pip install --quiet --target .gpu_deps --python-version 3.12 --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --no-deps \
  pytest pluggy iniconfig packaging hypothesis attrs sortedcontainers pytest-benchmark py-cpuinfo tqdm
du -sh .gpu_deps
