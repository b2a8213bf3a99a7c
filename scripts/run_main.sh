#!/usr/bin/env bash
# Sets up the environment and runs the main job: the benchmark of fused ExpandNets against the
# compact network and the unfused chain (quick set on CPU, full set on a GPU). Flags go to
# `python -m bench.run` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
${PYTHON:-python3} -m bench.run "$@"
