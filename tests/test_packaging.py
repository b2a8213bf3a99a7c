"""The wheel is a working install: its metadata, its files, and a venv that runs the benchmark
and one training epoch from outside the checkout.

The install test uses a venv over this Python's site-packages (torch, numpy, ... already there;
~1 minute on 2 cores) and installs with ``--no-index``: pip must find every requirement already
satisfied, so it installs nothing but expandnets_cuda (no torch upgrade). A venv with nothing
in it (torch==2.13.0 first, then ``.[train]``: ~3 minutes, local wheel files only) runs with
``EXPANDNETS_FRESH_VENV_TEST=1``.
"""
import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
import torch

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always carries it
    from pip._vendor.packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parents[1]
NUMPY_WARNING = "Failed to initialize NumPy"


def _run(cmd, cwd, env=None, timeout=600):
    done = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _outside_env(venv: pathlib.Path) -> dict:
    """The environment of a user of the venv: nothing of the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """The wheel built from a copy of the checkout (a build in place would leave build/ behind,
    and stale files in build/lib would go into later wheels)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", ".venv", "results", "bench_results",
        ".gpu_deps", "*_out", "_build_info.json", "*.so"))
    env = {**os.environ, "EXPANDNETS_SKIP_CUDA": "1"}  # the pure-Python wheel; the CUDA build is tested elsewhere
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist",
          source], cwd=root, env=env)
    (found,) = (root / "dist").glob("expandnets_cuda-*.whl")
    return found


def _metadata(wheel: pathlib.Path):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        return names, archive.read(meta).decode(), archive.read(entry).decode()


def _requirements(metadata: str):
    return [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")]


def _extra(req: Requirement):
    found = re.search(r'extra == "([^"]+)"', str(req.marker)) if req.marker else None
    return found.group(1) if found else None


def test_the_wheel_holds_one_package_with_the_reference_and_the_benchmark(wheel):
    names, _, entry_points = _metadata(wheel)
    tops = {name.split("/")[0] for name in names}
    assert tops == {"expandnets_cuda", "expandnets_cuda-0.1.0.dist-info"}  # no top-level python_ref or bench
    for folder, package in (("python_ref", "reference"), ("bench", "bench")):
        for source in (REPO / folder).glob("*.py"):
            assert f"expandnets_cuda/{package}/{source.name}" in names, source
    assert "expandnets_cuda/_build_info.json" in names
    assert "expandnets_cuda/bench/paper_tables.json" in names  # the paper's figures, printed beside measured ones
    scripts = dict(line.replace(" ", "").split("=") for line in entry_points.splitlines() if "=" in line)
    assert scripts == {"expandnets-bench": "expandnets_cuda._cli:bench",
                       "expandnets-train": "expandnets_cuda.train.__main__:main",
                       "expandnets-info": "expandnets_cuda.info:main",
                       "expandnets-export": "expandnets_cuda.deploy.export:main"}


def test_the_wheel_declares_its_dependencies_and_keeps_the_installed_torch(wheel):
    _, metadata, _ = _metadata(wheel)
    reqs = _requirements(metadata)
    runtime = {r.name: r for r in reqs if _extra(r) is None}
    assert set(runtime) == {"torch", "numpy"}
    installed = torch.__version__.split("+")[0]
    assert runtime["torch"].specifier.contains(installed), (runtime["torch"], installed)
    extras = {}
    for r in reqs:
        if _extra(r):
            extras.setdefault(_extra(r), set()).add(r.name)
    assert {"scikit-learn", "tqdm", "matplotlib"} <= extras["train"]
    assert {"tqdm", "matplotlib"} <= extras["bench"]
    assert {"onnx", "onnxscript", "onnxruntime"} <= extras["export"]
    assert {"pytest", "hypothesis", "pytest-benchmark", "numpy", "triton"} | extras["train"] | extras["export"] \
        <= extras["test"]


def test_requirements_txt_gives_a_checkout_everything_the_extras_give(wheel):
    """scripts/setup_env.sh installs requirements.txt and then the project with --no-deps."""
    _, metadata, _ = _metadata(wheel)
    listed = {Requirement(line).name.lower() for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    declared = {r.name.lower() for r in _requirements(metadata)} - {"torch"}  # torch: setup_env.sh pins it
    assert declared <= listed, declared - listed


def test_package_code_imports_the_reference_by_its_installed_name():
    """``import python_ref`` inside the package or the benchmark works only in a checkout."""
    offenders = []
    for folder in ("expandnets_cuda", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
                offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names
                              if n == "python_ref" or n.startswith("python_ref.")]
    assert not offenders, "import expandnets_cuda.reference (or .reference) instead: " + ", ".join(offenders)


def test_a_checkout_binds_python_ref_and_expandnets_cuda_reference_to_the_same_modules():
    import python_ref

    import expandnets_cuda
    assert expandnets_cuda.reference is python_ref
    for source in (REPO / "python_ref").glob("*.py"):
        if source.stem != "__init__":
            assert sys.modules[f"expandnets_cuda.reference.{source.stem}"] is sys.modules[f"python_ref.{source.stem}"]


def _check_runs_outside_the_checkout(venv: pathlib.Path, cwd: pathlib.Path):
    python, env = venv / "bin" / "python", _outside_env(venv)
    site = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             cwd, env).stdout.strip())
    assert not (site / "python_ref").exists() and not (site / "bench").exists()
    probe = _run([python, "-c", (
        "import sys, expandnets_cuda as ec, expandnets_cuda.reference as r, expandnets_cuda.bench.run; "
        "print(ec.__file__); print(r.__file__); print('python_ref' in sys.modules)")], cwd, env)
    package, reference, leaked = probe.stdout.split()
    assert package.startswith(str(site)) and reference.startswith(str(site / "expandnets_cuda" / "reference"))
    assert leaked == "False"
    stderr = probe.stderr

    out = cwd / "bench" / "out.json"
    bench = _run(["expandnets-bench", "--models", "smallnet3", "--rates", "2", "--strategies", "cl",
                  "--skip-network", "--skip-scaling", "--backends", "torch", "--layer-peers", "", "--layer-batch", "2",
                  "--min-run-time", "0.01", "--rounds", "2", "--no-progress", "--out", out], cwd, env)
    record = json.loads(out.read_text())
    assert record["layers"] and {row["impl"] for row in record["layers"]} >= {"compact", "unfused", "fused[torch]"}
    assert "smallnet3" in bench.stdout

    train = _run(["expandnets-train", "--model", "smallnet3", "--form", "cl", "--rate", "2", "--epochs", "1",
                  "--dataset", "digits", "--train-limit", "256", "--test-limit", "128", "--no-progress",
                  "--out-dir", cwd / "run"], cwd, env)
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    assert "OK" in train.stdout and summary
    assert (cwd / "run" / "model_compact.pt").is_file()

    info = _run(["expandnets-info"], cwd, env)
    assert "Backends (what runs on this machine now)" in info.stdout

    exported = _run(["expandnets-export", cwd / "run"], cwd, env)  # contracted, exported, checked
    assert "OK: the exported files" in exported.stdout and (cwd / "run" / "export" / "model.onnx").is_file()
    paper = _run(["expandnets-export", "--paper", "shufflenet_v2_x0_5", "--input-size", "64", "--out", cwd / "shuffle"],
                 cwd, env)
    assert "OK: the exported files" in paper.stdout
    for text in (stderr, bench.stderr, train.stderr, info.stderr):
        assert NUMPY_WARNING not in text


def _installed(report: pathlib.Path):
    return {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}


def _venv_over_this_python(venv: pathlib.Path, cwd: pathlib.Path) -> None:
    """A venv that sees this Python's packages. ``--system-site-packages`` means the *base*
    interpreter's, which lack torch where this Python is itself a venv: a ``.pth`` file adds
    this one's site-packages. ``--without-pip``: the pip and setuptools of this Python serve the
    venv; a venv's own older setuptools would shadow the one torch's metadata asks for."""
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd)
    if sys.prefix != sys.base_prefix:
        site = _run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd).stdout.strip()
        ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
        (pathlib.Path(site) / "_expandnets_parent_env.pth").write_text("".join(f"{p}\n" for p in ours))


def test_the_wheel_installs_into_a_venv_and_runs_from_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    _venv_over_this_python(venv, tmp_path)
    report = tmp_path / "report.json"
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--report", report,
          f"{wheel}[train,bench,export]"], tmp_path, _outside_env(venv))
    assert _installed(report) == {"expandnets-cuda"}  # every dependency satisfied as installed: torch kept
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    _check_runs_outside_the_checkout(venv, cwd)


@pytest.mark.skipif(os.environ.get("EXPANDNETS_FRESH_VENV_TEST") != "1",
                    reason="~3 minutes: set EXPANDNETS_FRESH_VENV_TEST=1 (a venv with nothing but what the wheel asks for)")
def test_the_wheel_installs_its_dependencies_into_an_empty_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q"]
    env = _outside_env(venv)
    # The CPU wheel first, as scripts/setup_env.sh does: torch>=2.11 alone would take a CUDA build.
    _run(pip + [f"torch=={torch.__version__.split('+')[0]}"], tmp_path, env, timeout=1200)
    report = tmp_path / "report.json"
    _run(pip + ["--report", report, f"{wheel}[train,bench,export]"], tmp_path, env, timeout=1200)
    installed = _installed(report)
    assert {"expandnets-cuda", "numpy", "scikit-learn", "tqdm", "matplotlib", "onnx", "onnxruntime"} <= installed
    assert "torch" not in installed
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    _check_runs_outside_the_checkout(venv, cwd)
