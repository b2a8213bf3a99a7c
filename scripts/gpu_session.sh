#!/usr/bin/env bash
# What a lent GPU runs, in two device calls that fit its lease (15 minutes in all, at most 10 per
# call, 1-2 of them to start the machine; on the image's 16 cores):
#   bash scripts/gpu_session.sh --phase 1    build + GPU tests + compute-sanitizer (scripts/gpu_ci.sh)
#   bash scripts/gpu_session.sh --phase 2    the benchmarks whose JSON/PNG are committed under bench/results/
#   bash scripts/gpu_session.sh              both, one after the other (a GPU of one's own)
#   bash scripts/gpu_session.sh --dry-run    HERE, without a GPU (in the GPU-stack venv that
#       tools/gpu_stack.sh makes): every step that needs no device (build, load, collect the GPU
#       tests, plan the benchmarks), then each phase's budget; fails if a phase would not fit.
# Logs and results go to $OUT (default ./gpu_session_out). The image has every package the
# session needs (scripts/gpu_deps.sh checks; what it would carry goes in .whl/, installed here).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_session_out}
PHASE_LIMIT_S=540  # 9 minutes: a device call may run 10
mode=all
case "${1:-}" in
  --phase) mode=${2:?--phase 1 or 2} ;;
  --dry-run) mode=dry ;;
  "") ;;
  *) echo "usage: $0 [--phase 1|2 | --dry-run]"; exit 2 ;;
esac
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then  # carried wheels (scripts/gpu_deps.sh)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

# The benchmark sets a lent GPU runs (the full sets of bench.run --full take over an hour: see
# their --plan). Layers and nonlinear chains of SmallNet k=7 at r=4 on the main backend pairs;
# networks SmallNet k=7 (CL, CK, CL+FC) and MobileNetV2 (CL, CL+FC) at r=4 against the collapse
# peer (the torch.compile peer's compilations alone would take the phase).
BENCH_COMMON=(--full --device cuda --rates 4 --min-run-time 0.2 --rounds 5 --no-progress --skip-scaling)
BENCH_SMALLNET=(-m bench.run "${BENCH_COMMON[@]}" --models smallnet7 --network-models smallnet7
                --backends torch,triton,cuda,triton+torch,cuda+torch,auto --peers collapse --forms compact,cl,ck,cl+fc)
BENCH_MOBILENET=(-m bench.run "${BENCH_COMMON[@]}" --skip-layers --skip-nonlinear --network-models mobilenet_v2
                 --peers collapse --forms compact,cl,cl+fc)
BENCH_KERNELS=(-m bench.kernels --device cuda --models smallnet7 --rates 4 --backends triton,cuda)

status=0
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, remember failures, keep going
  local name=$1; shift
  echo "== $name: $*"
  local start=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - start)) s"; tail -n 4 "$OUT/$name.log" | sed 's/^/   | /'
  [ $rc -eq 0 ] || status=1
}

phase1() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
  "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
    | tee -a "$OUT/gpu.txt"
  step gpu_ci env OUT="$OUT/gpu_ci" PYTHON="$PYTHON" bash scripts/gpu_ci.sh
}

phase2() {
  step bench_smallnet7 "$PYTHON" "${BENCH_SMALLNET[@]}"
  step bench_mobilenet_v2 "$PYTHON" "${BENCH_MOBILENET[@]}"
  step bench_kernels "$PYTHON" "${BENCH_KERNELS[@]}"
  cp bench/results/*.json bench/results/*.png "$OUT/" 2>/dev/null
}

seconds_of() {  # the estimate a --plan printed ("~NNN s on a GPU")
  sed -n 's/.*~\([0-9]*\) s on a GPU.*/\1/p' "$1" | tail -n 1
}

dry_run() {
  # Phase 1's device-free steps: the build and the load as scripts/gpu_ci.sh does them, the GPU tests collected.
  local t0=$SECONDS
  step build env MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PYTHON" setup.py build_ext --inplace
  local build_s=${BUILD_SECONDS:-$((SECONDS - t0))}  # a cold build's time, where the caller measured one
  step load "$PYTHON" -c "import expandnets_cuda._C; from expandnets_cuda.kernels.cuda import schemas, chain_ops, \
compose_ops, conv_ops, worklist_ops, ck_worklist_ops; bad = schemas.mismatches(); assert not bad, bad; \
print('expandnets_cuda._C loads:', len(schemas.registered()), 'ops, as kernels/cuda/schemas.py expects')"
  step collect_gpu_tests "$PYTHON" -m pytest --collect-only -q -p no:cacheprovider -m gpu tests
  local gpu_tests
  gpu_tests=$(grep -Eo '^[0-9]+(/[0-9]+)? tests? (collected|selected)' "$OUT/collect_gpu_tests.log" | grep -Eo '^[0-9]+' | tail -n 1)
  if grep -qiE 'error' "$OUT/collect_gpu_tests.log"; then
    echo "   collection errors: see $OUT/collect_gpu_tests.log"; status=1
  fi
  # Phase 2: every benchmark's configuration parsed and counted.
  step plan_smallnet7 "$PYTHON" "${BENCH_SMALLNET[@]}" --plan
  step plan_mobilenet_v2 "$PYTHON" "${BENCH_MOBILENET[@]}" --plan
  step plan_kernels "$PYTHON" "${BENCH_KERNELS[@]}" --plan
  # The budget. Estimates, not measurements (the first GPU run replaces them): the build here
  # scaled from $(nproc) cores to the image's 16; a GPU test ~1 s (Triton compiles its kernels on
  # first use); each compute-sanitizer tool ~60 s over one call of every kernel; a Python start
  # with torch ~15 s per step.
  local cores build16 tests_s phase1_s phase2_s
  cores=$(nproc)
  build16=$(( build_s * cores / 16 > 30 ? build_s * cores / 16 : 30 ))
  tests_s=${gpu_tests:-0}
  phase1_s=$(( build16 + tests_s + 3 * 60 + 4 * 15 ))
  phase2_s=$(( $(seconds_of "$OUT/plan_smallnet7.log") + $(seconds_of "$OUT/plan_mobilenet_v2.log")
               + $(seconds_of "$OUT/plan_kernels.log") + 3 * 15 ))
  {
    echo "GPU session budget (estimates; each phase is one device call, limit ${PHASE_LIMIT_S} s):"
    printf '  phase 1  %4d s  build ~%d s (%d s on %d cores here), %s GPU tests ~%d s, 3 sanitizer tools ~180 s, starts ~60 s\n' \
      "$phase1_s" "$build16" "$build_s" "$cores" "${gpu_tests:-?}" "$tests_s"
    printf '  phase 2  %4d s  bench.run smallnet7 ~%s s, mobilenet_v2 ~%s s, bench.kernels ~%s s, starts ~45 s\n' \
      "$phase2_s" "$(seconds_of "$OUT/plan_smallnet7.log")" "$(seconds_of "$OUT/plan_mobilenet_v2.log")" \
      "$(seconds_of "$OUT/plan_kernels.log")"
  } | tee "$OUT/budget.txt"
  for s in "$phase1_s" "$phase2_s"; do
    if [ "$s" -gt "$PHASE_LIMIT_S" ]; then echo "   a phase would not fit its ${PHASE_LIMIT_S} s"; status=1; fi
  done
}

case $mode in
  1) phase1 ;;
  2) phase2 ;;
  all) phase1; phase2 ;;
  dry) dry_run ;;
  *) echo "--phase takes 1 or 2"; exit 2 ;;
esac
echo "gpu_session ($mode): $([ $status -eq 0 ] && echo ok || echo FAILED); logs in $OUT"
exit $status
