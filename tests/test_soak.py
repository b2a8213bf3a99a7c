"""The soak (tests/soak.py) in its shortened form, its detectors, and the bounded-cache helper.

The full soak is ``python tests/soak.py --steps 3000``; here it runs ``scaled(400)`` steps in a
fresh process (its RSS is then the soak's own), with this run's seed."""
import json
import os
import subprocess
import sys
import threading

import pytest

from expandnets_cuda import caches
from helpers import RUN_SEED, scaled

HERE = os.path.dirname(os.path.abspath(__file__))
SOAK = os.path.join(HERE, "soak.py")


def test_soak_short(tmp_path):
    steps = scaled(400, minimum=40)
    seed = RUN_SEED % 100_000
    out = tmp_path / "summary.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, SOAK, "--steps", str(steps), "--seed", str(seed), "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-4000:])
    assert out.exists(), f"the soak did not finish (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    summary = json.loads(out.read_text())
    replay = f"replay: python tests/soak.py --steps {steps} --seed {seed}"
    assert not summary["violations"], f"{replay}\n" + "\n".join(summary["violations"][:10])
    assert proc.returncode == 0, f"{replay}\n{proc.stderr[-3000:]}"
    assert summary["actions"]["fresh_checks"] >= steps // 50
    assert summary["models_created"] >= steps // 30
    for name, bound in summary["cache_bounds"].items():
        assert summary["caches_peak"].get(name, 0) <= bound, (name, summary["caches_peak"], bound)


@pytest.fixture
def soak_module(monkeypatch):
    sys.path.insert(0, HERE)
    import soak
    # The module lowers the cache bounds for its run; put them back afterwards.
    for name in ("PLAN_CACHE_SIZE", "BIAS_PLAN_CACHE_SIZE", "WORK_LIST_CACHE_SIZE"):
        monkeypatch.setattr(caches, name, getattr(caches, name))
    return soak


def test_the_soak_catches_an_unbounded_cache(soak_module, monkeypatch):
    """A planted defect: the shape-keyed caches stop evicting."""
    def unbounded(cache, key, value, limit, pinned=()):
        cache[key] = value
    monkeypatch.setattr(caches, "remember", unbounded)
    from expandnets_cuda.compose import products as composition_products
    monkeypatch.setattr(composition_products, "_PLANS", {})
    summary = soak_module.run(80, seed=3, triton_models=0, checkpoint=40, cache_bound=1)
    assert any("compose.products._PLANS holds" in v for v in summary["violations"]), summary["violations"]


def test_the_soak_catches_released_models_kept_alive(soak_module, monkeypatch):
    """A planted defect: the library keeps every network it expanded."""
    from expandnets_cuda.nn import network as network_composition
    kept = []
    install = network_composition.install

    def keeping(model):
        kept.append(model)
        return install(model)
    monkeypatch.setattr(network_composition, "install", keeping)
    summary = soak_module.run(80, seed=3, triton_models=0, checkpoint=40)
    assert kept and any("still alive" in v for v in summary["violations"]), summary["violations"]


def test_the_soak_catches_a_drift_from_a_fresh_model(soak_module, monkeypatch):
    """A planted defect: the evaluation cache ignores in-place parameter updates (stale weights)."""
    from expandnets_cuda.nn import unit as fused_unit
    composed = fused_unit.FusedUnit._composed

    def stale(self, composer, device_type):
        cached = self.__dict__.get("_planted_cache")
        if cached is not None and not fused_unit.torch.is_grad_enabled():
            return cached
        self.__dict__["_planted_cache"] = composed(self, composer, device_type)
        return self.__dict__["_planted_cache"]
    monkeypatch.setattr(fused_unit.FusedUnit, "_composed", stale)
    summary = soak_module.run(100, seed=4, triton_models=0, checkpoint=50, check_every=4)
    assert any("differs from a fresh model" in v for v in summary["violations"]), summary["violations"]


def test_remember_bounds_oldest_first_and_keeps_pinned():
    cache = {}
    for k in range(10):
        caches.remember(cache, k, str(k), limit=4, pinned={0})
    assert list(cache) == [0, 7, 8, 9]
    caches.remember(cache, 3, "3", limit=2, pinned={0})
    assert list(cache) == [0, 3]


def test_remember_from_threads():
    cache, errors = {}, []

    def fill(t):
        try:
            for k in range(2000):
                caches.remember(cache, (t, k), k, limit=16)
        except Exception as err:  # noqa: BLE001
            errors.append(repr(err))
    threads = [threading.Thread(target=fill, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(cache) <= 16 + 4
