#!/usr/bin/env bash
# Sets up the environment and runs the main job: the SmallNet k=7 layer benchmark
# (compact conv vs unfused ExpandNet chain vs fused unit). Extra flags go to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
${PYTHON:-python3} bench/smallnet_layers.py "$@"
