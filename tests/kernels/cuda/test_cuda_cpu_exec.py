"""Every csrc/ kernel executed on the CPU: the CUDA sources compiled as host C++ on the cuemu
execution layer (tests/cuda_cpu/: blocks, fiber threads, __syncthreads, per-block shared memory,
warp shuffles, WMMA fragments, fp16/bf16/TF32) under AddressSanitizer and UBSan, each launcher
checked against float64 references on every dtype path (FMA f32/f64, TF32/bf16/fp16 WMMA).
A harness: the GPU stays the judge (scripts/gpu_ci.sh), but this runs in every CI job.

The driver stops at the first sanitizer report; any mismatch fails its group. The scenarios at
the end show the harness catches what it claims to (divergent barriers, shared and global
overruns, misaligned WMMA, int32 offset overflow, a missing barrier)."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parents[2]  # tests/, beside the harness
sys.path.insert(0, str(HERE / "cuda_cpu"))
import build as cuemu_build  # noqa: E402  (tests/cuda_cpu/build.py)

# At least this many checks per group: a group that silently stops checking fails too.
MIN_CHECKS = {"cuemu": 9, "compose": 115, "conv": 885, "chain": 304, "worklist": 134, "ck_worklist": 69, "int64": 71}


@pytest.fixture(scope="module")
def driver():
    try:
        return cuemu_build.build()
    except subprocess.CalledProcessError as err:
        pytest.fail(f"the cuemu build failed:\n{err.stderr[-6000:]}")


def _run(driver, *args):
    return subprocess.run([str(driver), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **cuemu_build.SANITIZER_ENV})


@pytest.mark.parametrize("group", list(MIN_CHECKS))
def test_kernels_match_float64_references_under_sanitizers(driver, group):
    result = _run(driver, group)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"cuemu driver failed on group {group}:\n{out[-8000:]}"
    summary = re.search(r"cuemu driver: (\d+) checks, (\d+) failed", result.stdout)
    assert summary, out[-4000:]
    checks, failed = map(int, summary.groups())
    assert failed == 0 and checks >= MIN_CHECKS[group], summary.group(0)
    assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out, out[-4000:]


@pytest.mark.parametrize("scenario, message", [
    ("divergent-barrier", "barrier divergence"),
    ("shared-overrun", "AddressSanitizer: heap-buffer-overflow"),
    ("global-overrun", "AddressSanitizer: heap-buffer-overflow"),
    ("misaligned-wmma", "is not 256-bit aligned"),
    ("int32-offset", "signed integer overflow"),
    ("missing-barrier", "FAIL missing-barrier"),
])
def test_the_harness_reports_what_it_must(driver, scenario, message):
    result = _run(driver, "--expect-failure", scenario)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and message in out, out[-4000:]


def test_every_launch_and_shared_declaration_is_rewritten(tmp_path):
    launches, shared = cuemu_build.prepare_sources(tmp_path)
    sources = [p.read_text() for p in cuemu_build.kernel_files()]
    assert launches == sum(s.count("<<<") for s in sources) > 0
    assert shared == sum(len(re.findall(r"__shared__\s", s)) for s in sources) > 0
    rewritten = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "<<<" not in rewritten and "__shared__" not in rewritten


def test_every_kernel_family_is_built_and_checked():
    """Every csrc/<family>_<dtype>.cu family is compiled into the driver, which checks it: a new
    family needs a check_<family>.cpp (and a group in driver.cpp) before it lands."""
    families = {cuemu_build.family_of(p) for p in (cuemu_build.CSRC).glob("*.cu")}
    assert families == set(cuemu_build.FAMILIES), f"kernel families without CPU-execution checks: {sorted(families - set(cuemu_build.FAMILIES))}"
    assert all(f"check_{family}.cpp" in cuemu_build.HARNESS_SOURCES for family in families)
