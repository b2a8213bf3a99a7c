#!/usr/bin/env bash
# Installs what the project needs into the current Python, then the project itself (editable).
# On a machine without a CUDA build of torch it installs the pinned CPU wheel (torch==2.13.0):
# an unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "setup: keeping the CUDA build of torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check -r requirements.txt
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
"$PYTHON" -c "import expandnets_cuda as e, torch; print('setup: expandnets_cuda', e.__version__, 'torch', torch.__version__,
'| runs here:', ', '.join(n for n, b in e.available_backends().items() if b.available),
'(python -m expandnets_cuda.info says why not the others)')"
