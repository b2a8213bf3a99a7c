#!/usr/bin/env bash
# Sets up the environment and runs the main job: the benchmark of fused ExpandNets against the
# compact network, the unfused chain and the peers a user could pick instead (quick set on CPU,
# full set on a GPU). Flags go to `python -m bench.run` (see --help). Relative paths in the flags
# (e.g. --out) are taken from the directory you call this from.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
bash "$REPO/scripts/setup_env.sh"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec ${PYTHON:-python3} -m bench.run "$@"
