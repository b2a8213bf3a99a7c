"""The backend registry: names, lazy loading, refusals that name the backend, records whose
capabilities are fields, and backends registered from outside the package."""
import contextlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import expandnets_cuda as ec
from expandnets_cuda.backends import registry, triton_mode
from expandnets_cuda.backends.types import BackendUnavailableError, ChainRunner, Composer, Convolver, FusedPair


@contextlib.contextmanager
def registered(name, composer=None, convolver=None, chain=None, chain_of=None):
    """Loaders registered for the block, then the registry as it was."""
    saved = (dict(registry._COMPOSER_LOADERS), dict(registry._CONVOLVER_LOADERS), dict(registry._CHAIN_LOADERS),
             dict(registry._CHAIN_OF))
    try:
        if composer is not None:
            registry.register_composer(name, composer)
        if convolver is not None:
            registry.register_convolver(name, convolver)
        if chain is not None:
            registry.register_chain(name, chain, chain_of=chain_of)
        yield
    finally:
        for live, old in zip((registry._COMPOSER_LOADERS, registry._CONVOLVER_LOADERS, registry._CHAIN_LOADERS,
                              registry._CHAIN_OF), saved):
            live.clear()
            live.update(old)
        for key in [k for k in registry._LOADED if k[1] == name]:
            registry._LOADED.pop(key)


def torch_composer(name):
    torch_pair = registry.resolve("torch")
    c = torch_pair.composer
    return Composer(name, c.cl, c.ck, c.fc)


def test_importing_the_package_loads_no_backend():
    code = ("import sys, expandnets_cuda as ec; ec.backends.registry.check_backend_name('triton+cuda'); "
            "print(sorted(m for m in sys.modules if m.startswith(('expandnets_cuda.kernels.triton', "
            "'expandnets_cuda.kernels.cuda', 'expandnets_cuda._C')) or m == 'triton'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_names_are_checked_for_form_and_normalised():
    assert registry.check_backend_name(" Triton+TORCH ") == "triton+torch"
    for name in ("auto", "reference", "torch", "triton", "cuda", "triton-chain", "cuda-chain", "cuda+torch"):
        assert registry.check_backend_name(name) == name
    with pytest.raises(ValueError, match="backend must be .*got 'tritn'"):
        registry.check_backend_name("tritn")
    with pytest.raises(ValueError, match="got 'torch\\+torch\\+torch'"):
        registry.check_backend_name("torch+torch+torch")
    with pytest.raises(TypeError, match="backend must be a str, got int"):
        registry.check_backend_name(3)


def test_the_builtin_backends_and_their_chains():
    assert registry.backend_names()[:4] == ("reference", "torch", "triton", "cuda")
    assert registry.chain_names() == ("triton-chain", "cuda-chain")
    assert registry.chain_of("triton") == "triton-chain" and registry.chain_of("torch") is None
    assert set(registry.nonlinear_names()) == {"auto", "reference", "triton", "cuda", "triton-chain", "cuda-chain"}
    pair = registry.resolve("torch")
    assert isinstance(pair, FusedPair) and pair.name == "torch" and pair.composer.batches_groups
    assert registry.resolve("reference") == "reference"
    assert registry.candidate_pairs(torch.device("cpu"))[0].name == "torch"


def test_a_registered_backend_runs_and_is_reported():
    calls = []

    def conv2d(x, w, b, stride, padding, dilation, groups):
        calls.append("conv2d")
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    with registered("plugin", composer=lambda: torch_composer("plugin"),
                    convolver=lambda: Convolver("plugin", conv2d, F.linear)):
        assert "plugin" in registry.backend_names() and registry.check_backend_name("plugin+torch") == "plugin+torch"
        unit = ec.FusedExpandConv2d(3, 4, 3, padding=1, rate=2, backend="plugin")
        want = ec.FusedExpandConv2d(3, 4, 3, padding=1, rate=2, backend="reference")
        want.load_state_dict(unit.state_dict())
        x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
        torch.testing.assert_close(unit.double()(x), want.double()(x))
        assert calls == ["conv2d"]
        report = ec.available_backends()
        assert report["plugin"].available and "plugin+torch" in report and "torch+plugin" in report
    assert "plugin" not in registry.backend_names()


def test_an_unavailable_backend_says_why_names_itself_and_is_asked_again():
    attempts = []

    def refuse():
        attempts.append(1)
        raise BackendUnavailableError("no widget here", "install widget")

    with registered("widget", composer=refuse, convolver=refuse):
        for _ in range(2):
            with pytest.raises(BackendUnavailableError, match="backend 'widget' cannot run here: no widget here; "
                                                              "install widget"):
                registry.resolve("widget")
        assert len(attempts) == 2  # a refusal is not cached: the machine may change (a build, a device)
        info = ec.available_backends()["widget"]
        assert not info.available and info.why_not == "no widget here" and info.fix == "install widget"


def test_a_registered_chain_backend_serves_nonlinear_units():
    runner = ChainRunner("plugin-chain", lambda *args: None, Convolver("plugin", F.conv2d, F.linear))
    with registered("plugin-chain", chain=lambda: runner, chain_of="plugin"):
        assert registry.resolve("plugin-chain") is runner
        assert registry.chain_of("plugin") == "plugin-chain" and "plugin" in registry.nonlinear_names()
        assert runner in registry.chain_candidates(torch.device("cpu"))
        assert ec.available_backends()["plugin-chain"].available
    assert registry.chain_of("plugin") is None


def test_where_a_record_runs_is_read_from_its_fields(monkeypatch):
    gpu_only = Convolver("gpu-only", F.conv2d, F.linear, device_types=("cuda",))
    triton_kind = Convolver("kernels", F.conv2d, F.linear, device_types=("cuda",), triton_kernels=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(triton_mode, "interpreted", lambda: True)
    assert registry.devices_now(gpu_only) == ()
    assert registry.devices_now(triton_kind) == ("cpu",)  # the interpreter runs Triton kernels on the CPU
    monkeypatch.setattr(triton_mode, "interpreted", lambda: False)
    assert registry.devices_now(triton_kind) == ()
    with registered("gpu-only", convolver=lambda: gpu_only):
        with pytest.raises(BackendUnavailableError, match="gpu-only runs only on cuda"):
            registry.resolve("torch+gpu-only")
