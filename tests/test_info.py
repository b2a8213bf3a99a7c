"""The backend report says what runs on this machine now, and ``python -m expandnets_cuda.info`` shows it.

Triton's interpreter is read when a kernel is defined, so the cases that depend on it run in
fresh processes with the environment each case needs.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import expandnets_cuda as ec
from expandnets_cuda.backends import registry as backends
from expandnets_cuda.backends import triton_mode
from expandnets_cuda.backends.types import BackendInfo, Convolver

HAS_CUDA = torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _python(code: str, interpret=None, cwd=None, timeout=300) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, timeout=timeout,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(HAS_CUDA or not HAS_TRITON, reason="needs a CPU-only machine with triton installed")
def test_triton_without_interpreter_on_a_cpu_is_unavailable_and_says_how():
    out = _python("""
        import json, expandnets_cuda as ec
        report = ec.available_backends()
        t = report["triton"]
        try:
            ec.FusedExpandConv2d(2, 3, 3, rate=2, backend="triton")
            raised = ""
        except ec.BackendUnavailableError as err:
            raised = str(err)
        from expandnets_cuda.backends import triton_mode
        print(json.dumps({"available": t.available, "reason": t.reason, "fix": t.fix,
                          "pairs": sorted(n for n, b in report.items() if b.available),
                          "raised": raised, "table": str(report), "kernels": triton_mode.kernel_mode()}))
    """)
    got = json.loads(out)
    assert not got["available"]
    assert "CUDA device" in got["reason"] and "interpreter is off" in got["reason"]
    assert "TRITON_INTERPRET=1" in got["fix"]
    assert "TRITON_INTERPRET=1" in got["raised"] and "CUDA device" in got["raised"] and "'triton'" in got["raised"]
    assert got["kernels"] is None  # refused before defining the kernels, so the switch can still come later
    assert not [name for name in got["pairs"] if "triton" in name]  # no pair or chain runs it either
    row = [line for line in got["table"].splitlines() if line.startswith("triton ")]
    assert row and row[0].split()[1] == "no"


def test_without_triton_the_report_says_how_to_get_it():
    """Not TRITON_INTERPRET=1, which needs triton installed first."""
    out = _python("""
        import json, sys
        sys.modules["triton"] = None  # as if it were not installed
        import expandnets_cuda as ec
        from expandnets_cuda import info
        t = ec.available_backends()["triton"]
        print(json.dumps({"available": t.available, "reason": t.reason, "fix": t.fix, "text": info.format_info(info.collect())}))
    """, interpret="1")
    got = json.loads(out)
    assert not got["available"] and "triton is not installed" in got["reason"]
    assert "pip install triton==3.6.0" in got["fix"] and "TRITON_INTERPRET=1" in got["fix"]
    assert "pip install triton==3.6.0" in got["text"]


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_under_the_interpreter_is_available_on_the_cpu_and_runs():
    out = _python("""
        import json, torch, expandnets_cuda as ec
        report = ec.available_backends()
        t = report["triton"]
        torch.manual_seed(0)
        fast = ec.FusedExpandConv2d(2, 3, 3, rate=2, backend="triton")
        ref = ec.FusedExpandConv2d(2, 3, 3, rate=2, backend="reference")
        ref.load_state_dict(fast.state_dict())
        x = torch.randn(1, 2, 5, 5)
        err = (fast(x) - ref(x)).abs().max().item()
        print(json.dumps({"available": t.available, "devices": t.devices, "note": t.note,
                          "pairs": sorted(report), "err": err}))
    """, interpret="1")
    got = json.loads(out)
    assert got["available"] and "cpu" in got["devices"]
    assert "interpreter" in got["note"]
    assert {"triton+torch", "torch+triton", "triton-chain"} <= set(got["pairs"])
    assert got["err"] < 1e-5  # "available" means it really runs here


@pytest.mark.skipif(HAS_CUDA or not HAS_TRITON, reason="needs a CPU-only machine with triton installed")
def test_interpreter_switched_on_after_the_kernels_were_imported_is_reported():
    out = _python("""
        import json, os, expandnets_cuda as ec
        from expandnets_cuda.backends import triton_mode
        import expandnets_cuda.kernels.triton.cl_ops  # defines the kernels for a GPU
        os.environ["TRITON_INTERPRET"] = "1"
        t = ec.available_backends()["triton"]
        print(json.dumps({"mode": triton_mode.kernel_mode(), "setting": triton_mode.interpreter_setting(),
                          "available": t.available, "reason": t.reason, "fix": t.fix}))
    """)
    got = json.loads(out)
    assert got["mode"] == "compiled" and got["setting"]
    assert not got["available"]
    assert "after the Triton kernels were imported" in got["reason"]
    assert "before importing" in got["fix"] and "new process" in got["fix"]


def test_every_entry_is_true_about_running_here():
    report = ec.available_backends()
    assert {"reference", "torch", "triton", "cuda", "auto"} <= set(report)
    x = torch.randn(1, 2, 6, 6)
    for name, info in report.items():
        assert info.name == name
        if not info.available:
            assert info.reason and not info.devices, name
            with pytest.raises(ec.BackendUnavailableError) as err:
                ec.FusedExpandConv2d(2, 3, 3, rate=2, backend=name)
            assert info.why_not in str(err.value)
            continue
        assert info.devices and set(info.devices) <= {"cpu", "cuda"}, name
        if "only: use it in a pair" in info.note:
            continue
        unit = ec.FusedExpandConv2d(2, 3, 3, rate=2, backend=name)
        device = "cpu" if "cpu" in info.devices else "cuda"
        assert unit.to(device)(x.to(device)).shape == (1, 3, 4, 4), name


def test_unavailable_entries_carry_a_fix():
    for name, info in ec.available_backends().items():
        if not info.available:
            assert info.fix, name
            assert info.fix not in info.why_not, name


def test_torch_and_reference_run_everywhere_and_auto_names_its_candidates():
    report = ec.available_backends()
    expected = ("cpu", "cuda") if HAS_CUDA else ("cpu",)
    assert report["torch"].devices == expected and report["reference"].devices == expected
    cpu_pairs = [pair.name for pair in backends.candidate_pairs(torch.device("cpu"))]
    assert ", ".join(cpu_pairs) in report["auto"].note


def test_the_report_prints_as_a_table():
    report = ec.available_backends()
    table = str(report)
    assert repr(report) == table
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["backend", "runs", "here"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:] if line and not line.startswith(" ")}
    assert rows == {name: ("yes" if info.available else "no") for name, info in report.items()}
    assert max(len(line) for line in lines) <= 130
    for info in report.values():
        if not info.available:
            assert "why: " + info.why_not.split()[0] in table and "fix: " in table


def test_backend_info_str_is_one_readable_line():
    info = BackendInfo("x", False, "no widget here; install widget", "install widget")
    assert str(info) == "x: unavailable (no widget here); fix: install widget"
    assert info.why_not == "no widget here"
    assert str(BackendInfo("y", True, devices=("cpu",))) == "y: available on cpu"


def test_unavailable_error_joins_reason_and_fix_once():
    assert str(ec.BackendUnavailableError("no GPU", "use one")) == "no GPU; use one"
    named = ec.BackendUnavailableError("no GPU", "use one", "cuda")
    assert str(named) == "backend 'cuda' cannot run here: no GPU; use one" and named.reason == "no GPU"
    assert str(ec.BackendUnavailableError("no GPU; use one", "use one")) == "no GPU; use one"
    err = ec.BackendUnavailableError("no GPU")
    assert (err.reason, err.fix, str(err)) == ("no GPU", "", "no GPU")


def test_a_gpu_only_implementation_without_a_gpu_is_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_only = Convolver("gpu-only-test", lambda *a: None, lambda *a: None, device_types=("cuda",))
    backends.register_convolver("gpu-only-test", lambda: gpu_only)
    try:
        info = ec.available_backends()["gpu-only-test"]
        assert not info.available and "runs only on cuda" in info.reason and "cuda" in info.fix
        with pytest.raises(ec.BackendUnavailableError, match="runs only on cuda"):
            backends.resolve("torch+gpu-only-test")
    finally:
        backends._CONVOLVER_LOADERS.pop("gpu-only-test")
        backends._LOADED.pop(("convolver", "gpu-only-test"), None)


def test_cuda_fix_follows_what_is_missing(monkeypatch):
    from expandnets_cuda.kernels import cuda as cuda_backend
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert backends._cuda_fix() == cuda_backend.BUILD_HINT
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CUDA build of torch" in backends._cuda_fix()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "NVIDIA GPU of compute capability 8.0" in backends._cuda_fix()


@pytest.mark.skipif(HAS_CUDA or not HAS_TRITON, reason="the test process runs the kernels interpreted only on a CPU")
def test_kernel_mode_is_read_from_the_imported_kernels():
    import expandnets_cuda.kernels.triton.cl_ops  # noqa: F401  (conftest switched the interpreter on)
    assert triton_mode.kernel_mode() == "interpreted" and triton_mode.interpreted()


def test_info_command_prints_versions_devices_build_interpreter_cache_and_backends(tmp_path):
    env_cache = tmp_path / "cache"
    code = f"""
        import os, sys
        os.environ["EXPANDNETS_CACHE_DIR"] = {str(env_cache)!r}
        from expandnets_cuda import info
        sys.exit(info.main([]))
    """
    out = _python(code, cwd=str(tmp_path))
    import numpy
    for text in ("torch  ", torch.__version__, numpy.__version__, "Devices", "cpu", "CUDA extension (expandnets_cuda._C)",
                 "TRITON_INTERPRET", "unset", str(env_cache / "auto_backend.json"), "(not written yet)",
                 "Backends (what runs on this machine now)", "reference", "auto"):
        assert text in out, text
    if HAS_TRITON:
        import triton
        assert triton.__version__ in out
    if not HAS_CUDA:
        assert "none visible" in out
    assert ("CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}") in out


def test_info_json_matches_the_machine(tmp_path):
    out = subprocess.run([sys.executable, "-m", "expandnets_cuda.info", "--json"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=300, env={**os.environ, "TRITON_INTERPRET": "1"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["versions"]["torch"] == torch.__version__ and got["versions"]["python"] == sys.version.split()[0]
    assert [d["type"] for d in got["devices"]] == ["cpu"] + ["cuda"] * torch.cuda.device_count()
    built = importlib.util.find_spec("expandnets_cuda._C") is not None
    assert got["cuda_extension"]["built"] == built
    assert got["backends"]["cuda"]["available"] == (built and HAS_CUDA and ec.available_backends()["cuda"].available)
    # asking for the triton backend imported its kernels, under the interpreter
    assert got["triton_interpreter"] == {"TRITON_INTERPRET": "1", "on": True,
                                         "kernels": "interpreted" if HAS_TRITON else "not imported yet"}
    assert got["backends"]["triton"]["available"] == HAS_TRITON
    record = got["cuda_extension"]["build"]
    if record is not None:  # written by setup.py when the package was installed
        assert record["extension_configured"] == bool(record["arch_list"])
        assert record["extension_configured"] or record["skip_reason"]
