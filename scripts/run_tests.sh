#!/usr/bin/env bash
# Sets up the environment and runs the test suite (CPU; GPU tests skip cleanly without CUDA),
# plus one pass over the pytest-benchmark layer suite with timing disabled.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
${PYTHON:-python3} -m pytest -q -p no:cacheprovider tests bench/test_layer_benchmarks.py --benchmark-disable "$@"
