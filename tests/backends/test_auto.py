"""backend="auto": measured once per layer shape, cached as JSON, cleared on request."""
import json
import time

import pytest
import torch
import torch.nn.functional as F

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.backends import auto as autotune
from expandnets_cuda.backends import registry as backends
from helpers import REL_TOL, compare_units, twin


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPANDNETS_CACHE_DIR", str(tmp_path))
    autotune.clear_cache()
    yield tmp_path
    autotune.clear_cache()


@pytest.fixture
def slow_convolver(monkeypatch):
    """A second, deliberately slower convolver, so that auto has two pairs to measure.

    Measured at one thread: on an oversubscribed machine, a thread pool waiting for descheduled
    workers costs more than the difference under test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    def slow_conv2d(*args):
        time.sleep(0.02)  # far above the fast pair, even on a loaded machine
        return F.conv2d(*args)

    def slow_linear(*args):
        time.sleep(0.02)  # far above the fast pair, even on a loaded machine
        return F.linear(*args)

    monkeypatch.setitem(backends._CONVOLVER_LOADERS, "slow",
                        lambda: backends.Convolver("slow", slow_conv2d, slow_linear))
    yield
    backends._LOADED.pop(("convolver", "slow"), None)
    torch.set_num_threads(threads)


def test_cpu_with_one_pair_measures_nothing(cache_dir, monkeypatch):
    monkeypatch.setattr(autotune, "measure", lambda *a: pytest.fail("measured with a single candidate"))
    unit = ec.FusedExpandConv2d(3, 4, 3, padding=1, rate=2)
    unit(torch.randn(2, 3, 6, 6))
    assert [p.name for p in backends.candidate_pairs(torch.device("cpu"))] == ["torch"]
    assert not autotune.cache_path().exists()


def test_auto_measures_once_picks_the_fastest_and_caches(cache_dir, slow_convolver, monkeypatch):
    assert [p.name for p in backends.candidate_pairs(torch.device("cpu"))] == ["torch", "torch+slow"]
    fast, ref = twin(ec.FusedExpandConv2d, pr.ExpandedConv2d, 3, 4, 3, padding=1, rate=2,
                     dtype=torch.float64, backend="auto")
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    compare_units(fast, ref, x, REL_TOL[torch.float64], "auto")
    entries = json.loads(autotune.cache_path().read_text())
    assert len(entries) == 1
    (key, entry), = entries.items()
    assert entry["choice"] == "torch" and set(entry["times_ms"]) == {"torch", "torch+slow"}
    assert entry["times_ms"]["torch+slow"] > entry["times_ms"]["torch"]
    # A fresh process (empty memory) reads the file instead of measuring again.
    autotune._MEMORY.clear()
    autotune._LOADED_FROM.clear()
    with monkeypatch.context() as patch:
        patch.setattr(autotune, "measure", lambda *a: pytest.fail("re-measured a cached shape"))
        assert autotune.choose(fast, x).name == "torch"
    # Another shape is another measurement.
    fast(torch.randn(1, 3, 7, 7, dtype=torch.float64))
    assert len(autotune.cached_choices()) == 2


def test_measurement_leaves_no_gradients(cache_dir, slow_convolver):
    unit = ec.FusedExpandLinear(5, 3, rate=2)
    unit(torch.randn(4, 5))
    assert all(p.grad is None for p in unit.parameters())


def test_clear_and_damaged_cache(cache_dir, slow_convolver):
    unit = ec.FusedExpandConv2d(3, 4, 3, rate=2)
    unit(torch.randn(1, 3, 5, 5))
    assert autotune.cache_path().exists()
    autotune.clear_cache()
    assert not autotune.cache_path().exists() and not autotune._MEMORY
    autotune.cache_path().write_text("{not json")
    unit(torch.randn(1, 3, 5, 5))  # a damaged file is re-measured and rewritten
    assert len(autotune.cached_choices()) == 1


def test_auto_probes_the_backends_once_until_the_registry_changes(cache_dir, monkeypatch):
    """An unavailable backend is probed once, not at every forward (the CUDA probe looks for its
    extension on disk); registering a loader, or ``clear_cache()``, probes again."""
    probes = []

    def unavailable():
        probes.append(1)
        raise ec.BackendUnavailableError("never here", "nothing to do")

    monkeypatch.setitem(backends._COMPOSER_LOADERS, "absent", unavailable)
    unit = ec.FusedExpandConv2d(3, 4, 3, padding=1, rate=2)
    x = torch.randn(1, 3, 6, 6)
    for _ in range(3):
        assert unit._resolve(x).name == "torch"
        unit(x)
    assert len(probes) == 1
    monkeypatch.setitem(backends._CONVOLVER_LOADERS, "also-absent", unavailable)
    unit(x)
    assert len(probes) == 3  # the new loader, and the composer again (the registry changed)
    autotune.clear_cache()
    unit(x)
    assert len(probes) == 5
