#!/usr/bin/env bash
# Compiles every CUDA source in csrc/ with nvcc alone (no GPU, no torch headers needed) for
# sm_80 and sm_90, treating any warning in project code as an error, the way CI checks kernels.
# One line per file, then a summary; exits non-zero if any file fails. Objects go to a temp dir.
# ptxas reports every kernel's registers, spills and stack frame (-Xptxas -v); the gate
# tools/cuda_ptxas_gate.py reads those logs, prints the table, writes build/cuda_ptxas_gate.json
# and fails on any spill or stack frame.
#   bash tools/build_cuda_check.sh           compile everything (NVCC=..., JOBS=... override)
#   bash tools/build_cuda_check.sh --list    print the files it would compile, and stop
set -uo pipefail
cd "$(dirname "$0")/.."

mapfile -t SOURCES < <(ls csrc/*.cu 2>/dev/null | LC_ALL=C sort)
if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${SOURCES[@]}"
  exit 0
fi
if [[ ${#SOURCES[@]} -eq 0 ]]; then
  echo "build_cuda_check: no csrc/*.cu files"
  exit 1
fi
NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "build_cuda_check: nvcc not found (install the CUDA toolkit or set NVCC=/path/to/nvcc)"
  exit 1
fi
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# The flags torch's extension build uses for .cu files (C++20, implicit half conversions off), so
# what passes here also builds in setup.py; plus warnings as errors, host and device.
FLAGS=(-std=c++20 -O3 -Icsrc
       -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr
       -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror -Xptxas -v)

OUT_DIR=$(mktemp -d)
trap 'rm -rf "$OUT_DIR"' EXIT
start=$SECONDS

compile() {  # $1: source; writes $OUT_DIR/<name>.log and .status
  local name t0 status
  name=$(basename "$1" .cu)
  t0=$SECONDS
  "$NVCC" "${FLAGS[@]}" -c "$1" -o "$OUT_DIR/$name.o" >"$OUT_DIR/$name.log" 2>&1
  status=$?
  echo "$status $((SECONDS - t0))" >"$OUT_DIR/$name.status"
  if [[ $status -eq 0 ]]; then
    echo "ok    $1 ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $1 ($((SECONDS - t0)) s)"
    grep -v -e 'ptxas info' -e 'bytes stack frame' "$OUT_DIR/$name.log" | sed 's/^/      /'
  fi
}

running=0
for src in "${SOURCES[@]}"; do
  compile "$src" &
  running=$((running + 1))
  if [[ $running -ge $JOBS ]]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=0
for src in "${SOURCES[@]}"; do
  read -r status _ <"$OUT_DIR/$(basename "$src" .cu).status"
  [[ $status -eq 0 ]] || failed=$((failed + 1))
done
echo "build_cuda_check: $(( ${#SOURCES[@]} - failed ))/${#SOURCES[@]} files compiled for sm_80+sm_90 without warnings, $failed failed, $((SECONDS - start)) s ($JOBS jobs, $("$NVCC" --version | grep -o 'release [0-9.]*'))"
[[ $failed -eq 0 ]] || exit 1
${PYTHON:-python3} tools/cuda_ptxas_gate.py --logs "$OUT_DIR"
