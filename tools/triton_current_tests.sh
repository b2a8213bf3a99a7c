#!/usr/bin/env bash
# The Triton interpreter tests again under the current Triton release (the GPU image pins an
# older one, which scripts/setup_env.sh installs), in a venv of their own: it sees the system's
# torch and test tools, and shadows only triton and numpy (current triton's interpreter takes
# current numpy; the older interpreter's numpy pin stays in requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${TRITON_CURRENT_VENV:-${TMPDIR:-/tmp}/expandnets-triton-current}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-triton-current.txt
"$VENV/bin/python" -c "import triton, numpy, torch; print('triton-current: triton', triton.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
# tests/kernels/triton/test_random_triton.py (the only one of these that reads EXPANDNETS_TEST_SCALE) draws a
# quarter of its random cases here: the full count ran under the pinned Triton already.
EXPANDNETS_TEST_SCALE=${EXPANDNETS_TEST_SCALE:-0.25} "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/kernels/triton/test_triton_backend.py tests/kernels/triton/test_triton_wide_offsets.py tests/kernels/triton/test_triton_launch_configs.py \
  tests/kernels/triton/test_chain_kernels.py tests/kernels/triton/test_triton_worklist.py tests/kernels/triton/test_ck_worklist.py tests/kernels/triton/test_random_triton.py "$@"
