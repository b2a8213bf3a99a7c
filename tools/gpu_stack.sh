#!/usr/bin/env bash
# The lent GPU's software stack, rehearsed on a machine without a GPU (a CI step), so that a GPU's
# few minutes go to running kernels, not to finding that the build or the imports break there:
#   1. a venv of its own with the image's stack (requirements-gpu-stack.txt: the CUDA build of
#      torch 2.11.0, triton 3.6.0; Python 3.12 where there is one), cached per machine in
#      $EXPANDNETS_GPU_STACK_VENV (default ~/.cache/expandnets_cuda/gpu-stack-venv), rebuilt when
#      missing or when its requirements change (it downloads ~4 GB of CUDA wheels once);
#   2. builds and installs this package with its CUDA extension as a GPU user would
#      (pip install --no-build-isolation ., sm_80 and sm_90);
#   3. from outside the checkout, against that install: the extension loads without a GPU, defines
#      the ops the Python side calls, with fakes and autograd (tests/kernels/cuda/test_cuda_extension.py), and
#      a training step on fake CUDA tensors runs through the CUDA and Triton backends
#      (tests/nn/test_fake_cuda_step.py);
#   4. the GPU session's dry run (scripts/gpu_session.sh --dry-run) and its budget;
#   5. the whole test suite under this torch (the checkout, installed in editable mode).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${EXPANDNETS_GPU_STACK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/expandnets_cuda/gpu-stack-venv}
start=$SECONDS
stamp() { echo "gpu_stack: $* ($((SECONDS - start)) s)"; }

find_python() {  # the image runs Python 3.12; take one where there is
  local found
  for found in ${GPU_STACK_PYTHON:-} python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 python3; do
    if [ -n "$found" ] && "$found" -c "import sys" 2>/dev/null; then echo "$found"; return; fi
  done
}

# 1. The venv, (re)built when its key (interpreter version + requirements) differs.
BASE=$(find_python)
key=$({ "$BASE" -V 2>&1; cat requirements-gpu-stack.txt requirements.txt; } | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.key" 2>/dev/null)" != "$key" ]; then
  stamp "making $VENV with $("$BASE" -V 2>&1) (cold: downloads the CUDA build of torch)"
  rm -rf "$VENV"
  "$BASE" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-gpu-stack.txt
  echo "$key" >"$VENV/.key"
fi
PY=$VENV/bin/python
"$PY" -c "import sys, torch, triton, numpy; assert torch.version.cuda, 'not a CUDA build of torch'; \
print('gpu_stack: python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, \
'numpy', numpy.__version__)"
stamp "venv ready"

# 2. Build and install as a GPU user (nvcc here may be a wrapper script: setup.py finds the toolkit).
t0=$SECONDS
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0} MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  "$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall .
BUILD_SECONDS=$((SECONDS - t0))
stamp "built and installed with the extension in $BUILD_SECONDS s"

# 3. The install, from outside the checkout.
outside=$(mktemp -d)
trap 'rm -rf "$outside"' EXIT
(cd "$outside" && "$PY" -c "import expandnets_cuda, expandnets_cuda._C, sys; \
assert '$REPO' not in expandnets_cuda.__file__, expandnets_cuda.__file__; print('gpu_stack: loads', expandnets_cuda._C.__file__)" \
  && "$PY" -m expandnets_cuda.info | sed -n "/^CUDA extension/,/^Triton/p" | sed "\$d")
(cd "$outside" && EXPANDNETS_TEST_INSTALLED=1 EXPANDNETS_GPU_STACK=1 "$PY" -m pytest -q -p no:cacheprovider \
  --rootdir "$REPO" "$REPO/tests/kernels/cuda/test_cuda_extension.py" "$REPO/tests/nn/test_fake_cuda_step.py")
"$PY" -m pip uninstall --quiet --yes expandnets_cuda  # the suite below tests the checkout
stamp "the installed package checked"

# 4. The GPU session rehearsed (its build reuses the objects of step 2).
OUT=${GPU_STACK_OUT:-$(mktemp -d)} BUILD_SECONDS=$BUILD_SECONDS PYTHON=$PY bash scripts/gpu_session.sh --dry-run
stamp "GPU session dry run passed"

# 5. The test suite under this torch, on the checkout installed in editable mode as
#    scripts/setup_env.sh installs it (subprocesses of the tests import it too). The random tests
#    draw a quarter of their cases here (their full count ran under the main torch already).
"$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
EXPANDNETS_GPU_STACK=1 EXPANDNETS_TEST_SCALE=${EXPANDNETS_TEST_SCALE:-0.25} "$PY" -m pytest -q -p no:cacheprovider tests bench/test_layer_benchmarks.py --benchmark-disable
stamp "done"
