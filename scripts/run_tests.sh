#!/usr/bin/env bash
# Sets up the environment and runs the test suite (CPU; GPU tests skip cleanly without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
${PYTHON:-python3} -m pytest -q -p no:cacheprovider "$@"
