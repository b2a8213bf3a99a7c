import os
import sys

import pytest
import torch

# The Triton kernels run on the CPU under the interpreter; the switch must be set before they
# are imported (the triton backend imports them lazily, on first use).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(__file__))  # helpers
# The checkout first (its package, python_ref and bench), unless the tests are to check an
# installed expandnets_cuda (tools/gpu_stack.sh runs some against the wheel it built).
if os.environ.get("EXPANDNETS_TEST_INSTALLED") != "1":
    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))


def pytest_report_header(config):
    from helpers import RUN_SEED, scaled
    return f"expandnets_cuda random tests: seed {RUN_SEED} (EXPANDNETS_TEST_SEED={RUN_SEED} replays it), scale {scaled(1000)}/1000"


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped cleanly without one")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
