import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # helpers
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))  # the bench package


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
