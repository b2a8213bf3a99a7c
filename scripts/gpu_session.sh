#!/usr/bin/env bash
# Everything a lent GPU should run, in one call (the device tool bills by the minute):
# build + GPU tests + sanitizers (scripts/gpu_ci.sh), then the benchmarks whose JSON/PNG are
# committed under bench/results/. Logs and results are copied to $OUT (default ./gpu_session_out).
# The GPU image has torch, triton, pytest and ninja but no network: nothing is installed here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_session_out}
mkdir -p "$OUT"
# .gpu_deps: the carried test tools (scripts/gpu_deps.sh), when the image lacks them.
export PYTHONPATH=$PWD:$PWD/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}
status=0
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, remember failures, keep going
  local name=$1; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - start)) s"; tail -n 3 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
if [ -f scripts/gpu_ci.sh ]; then
  step gpu_ci env OUT="$OUT/gpu_ci" bash scripts/gpu_ci.sh
else
  step gpu_tests python -m pytest -q -p no:cacheprovider -m gpu tests
fi
step bench python -m bench.run --full --no-progress
step kernels python -m bench.kernels
if python -c "import sklearn" 2>/dev/null; then
  step train_epochs python -m bench.train_epochs --epochs 3
else
  echo "== train_epochs: skipped (scikit-learn, which ships the digits, is not on this image)"
fi
cp bench/results/*.json bench/results/*.png "$OUT/" 2>/dev/null
exit $status
