#!/usr/bin/env bash
# GPU CI, for a machine with an NVIDIA GPU (sm_80+), nvcc, compute-sanitizer and a CUDA build of
# torch with the test requirements already installed (nothing is downloaded):
#   1. builds the CUDA extension in place (setup.py build_ext --inplace),
#   2. checks the cuda backend loads, then runs every GPU test (pytest -m gpu) and the rest of the
#      CUDA and Triton backend tests,
#   3. runs compute-sanitizer memcheck, racecheck and synccheck over one call of every CUDA kernel.
# Logs and JUnit reports go to $OUT (default ./gpu_ci_out); exits non-zero if any step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SANITIZER=${SANITIZER:-compute-sanitizer}
OUT=${OUT:-./gpu_ci_out}
mkdir -p "$OUT"
failed=()

step() {  # step NAME COMMAND...: runs COMMAND with its output in $OUT/NAME.log
  local name=$1 t0=$SECONDS
  shift
  echo "== $name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "   ok ($((SECONDS - t0)) s)"
  else
    echo "   FAILED ($((SECONDS - t0)) s); the end of $OUT/$name.log:"
    tail -n 40 "$OUT/$name.log" | sed 's/^/   | /'
    failed+=("$name")
  fi
}

step environment "$PYTHON" -c "import sys, torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda); \
ok = torch.cuda.is_available(); print(torch.cuda.get_device_name() if ok else 'no CUDA device'); sys.exit(0 if ok else 1)"
step build "$PYTHON" setup.py build_ext --inplace
step load "$PYTHON" -c "import expandnets_cuda.kernels.cuda as cb; reason = cb.unavailable_reason(); \
assert reason is None, reason; cb.load_composer(); cb.load_convolver(); print('cuda backend loads')"

PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider -rs)
step gpu_tests "${PYTEST[@]}" -m gpu tests --junitxml="$OUT/gpu_tests.xml"
step backend_tests "${PYTEST[@]}" -m "not gpu" tests/kernels/cuda/test_cuda_backend.py tests/kernels/triton/test_triton_backend.py \
  tests/kernels/cuda/test_cuda_build.py --junitxml="$OUT/backend_tests.xml"

# One small call of every kernel and math path, called directly so that nothing can skip it. No
# caching allocator: each tensor is its own allocation, so memcheck sees every overrun.
EVERY_KERNEL=("$PYTHON" -c "import sys; sys.path[:0] = ['tests', 'tests/kernels/cuda']; import test_cuda_backend as t; \
t.test_every_kernel_once(); print('every kernel ran')")
FILTER=()
if "$SANITIZER" --help 2>/dev/null | grep -q -- "--kernel-name"; then
  FILTER=(--kernel-name kns=expandnets)  # our kernels only: torch's are not under test here
fi
for tool in memcheck racecheck synccheck; do
  step "$tool" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 1 "${FILTER[@]}" \
    "${EVERY_KERNEL[@]}"
done

if [[ ${#failed[@]} -eq 0 ]]; then
  echo "gpu_ci: all steps passed; logs in $OUT" | tee "$OUT/summary.txt"
  exit 0
fi
echo "gpu_ci: FAILED steps: ${failed[*]}; logs in $OUT" | tee "$OUT/summary.txt"
exit 1
