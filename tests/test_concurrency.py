"""Concurrency: processes sharing one ``auto`` cache directory, and threads sharing one module.

* Processes (tests/concurrency_worker.py, started together): the cache file stays valid JSON,
  keeps every entry either process wrote (the union), serves every shape a later run needs
  without measuring again, and training gives bit for bit the results of a serial run.
* Threads: one module run from 4 threads at once, in evaluation mode (under ``torch.no_grad``
  and with autograd on) and in training mode
  (forward and ``torch.autograd.grad``; the staged network composition is taken by one forward
  only), gives what serial calls give, on backends torch and auto (auto also while it measures).
  Not covered, by design: updating parameters from one thread while another runs the module
  (synchronise optimizer steps yourself), and the Triton *interpreter* (TRITON_INTERPRET=1, a
  test mode): it patches Triton's language module globally for each launch, so interpreted
  launches from several threads at once fail inside Triton (InterpreterError).
"""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

import concurrency_worker as worker
import expandnets_cuda as ec
from expandnets_cuda.backends import auto as autotune

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "concurrency_worker.py")
ROUNDS = 2
KEYS = 100


@pytest.fixture
def shared_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EXPANDNETS_CACHE_DIR", str(cache))
    autotune.clear_cache()
    yield cache
    autotune.clear_cache()


@pytest.fixture(autouse=True)
def _restore():
    """Whatever a test registered or loaded stays in this test."""
    yield
    worker.unregister_slow_convolver()
    autotune._MEMORY.clear()
    autotune._LOADED_FROM.clear()


@pytest.fixture(scope="module")
def together(tmp_path_factory):
    """Workers A and B, started at once on one cache directory: first ``KEYS`` cache stores each
    in a tight loop, then ``ROUNDS`` rounds of training with auto. (One pair of processes for
    both tests: starting one costs seconds.)"""
    tmp_path = tmp_path_factory.mktemp("together")
    cache = tmp_path / "cache"
    return cache, _run_together("both", f"{KEYS},{ROUNDS}", tmp_path, cache)


@pytest.fixture
def thread_count():
    """One intra-op thread per Python thread: OpenMP teams of several threads each, on a shared
    machine, spend their time waiting for descheduled members."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_together(mode: str, count, tmp_path, cache) -> dict:
    """Workers A and B started at once on one cache directory; their JSON records by role."""
    sync = tmp_path / "sync"
    sync.mkdir()
    env = dict(os.environ, EXPANDNETS_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    procs = {role: subprocess.Popen([sys.executable, WORKER, mode, role, str(count), str(tmp_path / f"{role}.json"),
                                     str(sync)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for role in "AB"}
    deadline = time.time() + 120
    while not all((sync / f"ready_{role}").exists() for role in "AB"):
        assert all(p.poll() is None for p in procs.values()), {r: p.communicate()[0][-2000:] for r, p in procs.items()}
        assert time.time() < deadline, "workers never got ready"
        time.sleep(0.01)
    (sync / "go").touch()
    for role, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"worker {role} failed:\n{out[-3000:]}"
    return {role: json.loads((tmp_path / f"{role}.json").read_text()) for role in "AB"}


def _check_cache_file(cache, needed) -> dict:
    path = cache / "auto_backend.json"
    entries = json.loads(path.read_text())  # valid JSON
    assert isinstance(entries, dict)
    missing = sorted(set(needed) - set(entries))
    assert not missing, f"{len(missing)} of {len(set(needed))} entries written by the two processes were lost, e.g. {missing[:2]}"
    for key, entry in entries.items():
        assert entry["choice"] in ("torch", "torch+slow") and set(entry["times_ms"]) == {"torch", "torch+slow"}, (key, entry)
    leftovers = [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    return entries


def test_concurrent_cache_writes_lose_no_entry(together):
    """Two processes each storing ``KEYS`` choices in a tight loop: the file ends with all of them."""
    cache, results = together
    needed = results["A"]["hammer"]["needed"] + results["B"]["hammer"]["needed"]
    assert len(set(needed)) == 2 * KEYS
    _check_cache_file(cache, needed)


def test_two_processes_training_with_auto_share_one_cache(together, monkeypatch):
    cache, both = together
    results = {role: both[role]["train"] for role in "AB"}
    needed = results["A"]["needed"] + results["B"]["needed"]
    assert set(results["A"]["needed"]) & set(results["B"]["needed"]), "the roles should share some shapes"
    assert set(results["A"]["needed"]) - set(results["B"]["needed"]), "and each have its own"
    entries = _check_cache_file(cache, needed)
    assert len(entries) == 2 * KEYS + len(set(needed))
    # A later (serial) run loads the cache and needs no measurement; same seeds, same results.
    monkeypatch.setenv("EXPANDNETS_CACHE_DIR", str(cache))
    autotune._MEMORY.clear()
    autotune._LOADED_FROM.clear()
    monkeypatch.setattr(autotune, "measure", lambda *a: pytest.fail(f"re-measured a cached shape: {a[1].shape}"))
    for role in "AB":
        serial = worker.train(role, ROUNDS)
        assert serial["losses"] == results[role]["losses"], f"role {role}: losses differ from the concurrent run"
        assert serial["digests"] == results[role]["digests"], f"role {role}: parameters differ from the concurrent run"


def test_a_damaged_cache_file_is_measured_again(shared_cache, monkeypatch):
    """Half-written or binary garbage (a crash of an older version, a full disk) is not trusted."""
    worker.register_slow_convolver()
    monkeypatch.setattr(worker, "SLOW_SECONDS", 0.0)
    unit = ec.FusedExpandLinear(4, 3, rate=2)
    for garbage in (b'{"cpu|', b"\xff\xfe\x00garbage"):
        shared_cache.mkdir(exist_ok=True)
        (shared_cache / "auto_backend.json").write_bytes(garbage)
        autotune._MEMORY.clear()
        autotune._LOADED_FROM.clear()
        unit(torch.randn(2, 4))
        assert len(autotune.cached_choices()) == 1


# ------------------------------------------------------------------------------------ threads
THREADS = 4


def _network(backend):
    torch.manual_seed(0)
    # Two equal 3x3 units: the network composer batches them into one call (a group).
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                        nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 5, padding=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5))
    model = ec.expand_model(net, "cl", rate=2, fc=True, backend=backend).double()
    return model


def _units(backend):
    torch.manual_seed(1)
    return [ec.FusedExpandConv2d(3, 4, 3, padding=1, groups=1, rate=2, backend=backend, dtype=torch.float64),
            ec.FusedExpandConv2d(4, 4, 5, padding=2, strategy="ck", rate=2, backend=backend, dtype=torch.float64),
            ec.FusedExpandLinear(7, 5, rate=3, backend=backend, dtype=torch.float64)]


def _input_for(module, batch, seed):
    g = torch.Generator().manual_seed(seed)
    if isinstance(module, ec.FusedExpandLinear):
        return torch.randn(batch, module.in_features, generator=g, dtype=torch.float64)
    channels = module.in_channels if isinstance(module, ec.FusedExpandConv2d) else 3
    return torch.randn(batch, channels, 6, 6, generator=g, dtype=torch.float64)


def _call(module, x, how):
    """What one call yields: the output, plus the input's and the parameters' gradients with autograd."""
    if how == "no_grad":
        with torch.no_grad():
            return [module(x)]
    x = x.detach().requires_grad_(True)
    y = module(x)
    params = [p for p in module.parameters() if p.requires_grad]
    return [y.detach(), *torch.autograd.grad(y.square().sum(), [x, *params])]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float64 rounding: MKL picks its small-GEMM kernels per calling thread (a
    ``(5, 21) @ (21, 15)^T`` product differs in the last bit between the main thread and another,
    with nothing shared). A race (another thread's staged weight, a shared buffer) would differ by
    the inputs' scale, ~1e13 times more."""
    scale = float(b.abs().max()) if b.numel() else 0.0
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-13, atol=1e-13 * scale)


def _hammer_threads(module, how, inputs, expected, repeats=3):
    """Every thread runs every input (in a thread-specific order) ``repeats`` times."""
    errors = []
    start = threading.Barrier(THREADS)

    def run(t):
        try:
            start.wait()
            for r in range(repeats):
                for k in range(len(inputs)):
                    i = (k + t + r) % len(inputs)
                    got = _call(module, inputs[i], how)
                    if not all(_same(a, b) for a, b in zip(got, expected[i])):
                        errors.append(f"thread {t}: input {i} ({how}) differs from the serial result")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(f"thread {t}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: interleave inside the forward
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    return errors


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("mode, how", [("eval", "no_grad"), ("eval", "grad"), ("train", "grad")])
def test_threads_share_one_module(backend, mode, how, thread_count):
    modules = [*_units(backend), _network(backend)]
    for module in modules:
        # Training mode: BN off (its running statistics are a per-call update, racy by nature).
        module.train(mode == "train")
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        inputs = [_input_for(module, 1 + i % 3, seed=i) for i in range(6)]
        expected = [_call(module, x, how) for x in inputs]
        errors = _hammer_threads(module, how, inputs, expected)
        assert not errors, f"{type(module).__name__} on {backend}, {mode}/{how}: {len(errors)} failures, " + "; ".join(errors[:3])


def test_threads_while_auto_measures(shared_cache, thread_count):
    """Four threads miss the same shapes at once: each may measure, all get the same results."""
    worker.register_slow_convolver()
    for module in _units("auto"):
        module.eval()
        inputs = [_input_for(module, 1 + i, seed=i) for i in range(2)]
        reference = [m for m in _units("torch") if type(m) is type(module) and m.spec == module.spec][0]
        expected = [_call(reference, x, "grad") for x in inputs]
        errors = _hammer_threads(module, "grad", inputs, expected, repeats=1)
        assert not errors, "; ".join(errors[:3])
    assert len(autotune.cached_choices()) == 6
