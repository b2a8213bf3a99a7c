"""Random valid specs through every csrc/ launcher family executed on the CPU (the cuemu driver of
test_cuda_cpu_exec.py, same build, same sanitizers): the driver's ``random`` group draws
``scaled(300)`` cases from this run's seed (helpers.RUN_SEED; EXPANDNETS_TEST_SEED replays a run,
EXPANDNETS_TEST_SCALE scales the count) - convolutions forward/input grad/weight grad (dense,
grouped, depthwise, channel multipliers; any kernel, stride, padding, dilation, bias; NCHW,
channels_last, strided and CNHW activations), the CL composition, bias fold and CK fold, chain
units (CL and CK pairs) and CL/CK work lists of several units - each on one kernel path of its
family (f64, f32 FMA, TF32, f16, bf16 in turn), against float64 references under the fixed
groups' tolerance model (tests/cuda_cpu/check_random.cpp).

A failure prints the seed and the case's full spec; ``python3 tests/cuda_cpu/build.py random
--seed S --only I`` replays case I alone."""
import os
import pathlib
import re
import subprocess

import pytest

from helpers import RUN_SEED, scaled

# The driver fixture of the fixed groups (the build's objects are cached by content hash).
from test_cuda_cpu_exec import cuemu_build, driver  # noqa: F401 (driver: a fixture)

COUNT = scaled(300)
REPLAY = (f"replay: EXPANDNETS_TEST_SEED={RUN_SEED} EXPANDNETS_TEST_SCALE={os.environ.get('EXPANDNETS_TEST_SCALE', '1')} "
          f"pytest tests/{pathlib.Path(__file__).name}, or python3 tests/cuda_cpu/build.py random --seed {RUN_SEED} "
          f"--count {COUNT} (--only I for case I)")
CASE_LINE = re.compile(r"^random case (\d+) \(seed (\d+)\): (.*)$", re.M)


def _run(driver, *args):
    return subprocess.run([str(driver), "random", "--seed", str(RUN_SEED), *args], capture_output=True, text=True,
                          timeout=600 + 3 * COUNT, env={**os.environ, **cuemu_build.SANITIZER_ENV})


@pytest.fixture(scope="module")
def random_run(driver):
    return _run(driver, "--count", str(COUNT))


def _failure_report(result) -> str:
    cases = CASE_LINE.findall(result.stdout)
    last = f"last case started: {cases[-1][0]}: {cases[-1][2]}\n" if cases else ""
    fails = "\n".join(line for line in result.stdout.splitlines()
                      if line.startswith("FAIL") or " FAILED: replay" in line)
    return (f"seed {RUN_SEED}, {REPLAY}\n{last}{fails[-8000:]}\n--- stderr (sanitizer reports) ---\n"
            f"{result.stderr[-4000:]}")


def test_random_specs_match_float64_references_under_sanitizers(random_run):
    result = random_run
    assert result.returncode == 0, f"cuemu random group failed\n{_failure_report(result)}"
    summary = re.search(r"cuemu driver: (\d+) checks, (\d+) failed", result.stdout)
    cases = re.search(r"random: seed (\d+), (\d+) cases checked \((.*)\)", result.stdout)
    assert summary and cases, f"no summary\n{_failure_report(result)}"
    checks, failed = map(int, summary.groups())
    assert int(cases.group(1)) == RUN_SEED and int(cases.group(2)) >= COUNT and failed == 0 and checks > COUNT, (
        f"{cases.group(0)}; {summary.group(0)}\n{_failure_report(result)}")
    # every family on every path it has
    seen = dict(re.findall(r"(\w+/\w+) (\d+)", cases.group(3)))
    expected = {f"conv/{p}" for p in ("f64", "f32", "tf32", "f16", "bf16")} | {
        f"chain/{p}" for p in ("f64", "f32", "f16", "bf16")} | {
        f"{f}/{p}" for f in ("cl", "cl_bias", "ck", "cl_worklist", "ck_worklist") for p in ("f64", "f32")}
    if COUNT >= 40:
        assert expected <= set(seen), f"families/paths never drawn: {sorted(expected - set(seen))} (seed {RUN_SEED})"
    assert "ERROR: AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr, _failure_report(result)


def test_a_case_replays_alone(driver, random_run):
    """``--only I`` draws the same spec as case I of the full run (what a failure message tells you to run)."""
    cases = {int(i): spec for i, _, spec in CASE_LINE.findall(random_run.stdout)}
    assert len(cases) >= COUNT, f"{len(cases)} case lines for {COUNT} cases (seed {RUN_SEED})"
    for index in sorted({0, COUNT // 2, COUNT - 1}):
        alone = _run(driver, "--only", str(index))
        assert alone.returncode == 0, f"case {index} alone failed\n{_failure_report(alone)}"
        replayed = CASE_LINE.findall(alone.stdout)
        assert [(int(i), spec) for i, _, spec in replayed] == [(index, cases[index])], (
            f"seed {RUN_SEED} case {index} does not replay alone: {replayed} vs {cases[index]!r}")
