"""The benchmark timer: runs at the process's thread count, interleaves variants, reports spread."""
import time

import pytest
import torch

from expandnets_cuda.timing import SPREAD_WARNING, PairedRatio, Timing, interleaved, median_seconds, paired_ratio


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_cpu_timing_runs_at_the_threads_torch_is_set_to(two_threads):
    # torch.utils.benchmark.Timer ran every sample at 1 thread whatever the process used.
    seen = []
    timings = interleaved({"a": lambda: seen.append(torch.get_num_threads())}, "cpu", min_run_time=0.01, rounds=3)
    assert seen and set(seen) == {two_threads}
    assert timings["a"].threads == two_threads


def test_variants_are_timed_round_robin_in_rotating_order():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = interleaved(fns, "cpu", min_run_time=0.003, rounds=6)
    assert all(len(t.samples) == 6 for t in timings.values())
    # Collapse runs of the same name (one block = several calls): the block order per round rotates.
    blocks = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    timed = blocks[-18:]
    rounds = [timed[i:i + 3] for i in range(0, 18, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert {r[0] for r in rounds} == {"a", "b", "c"}  # no variant is always timed first


def test_a_sleep_is_not_measured_shorter_than_it_lasts():
    seconds = median_seconds(lambda: time.sleep(0.002), "cpu", min_run_time=0.03, rounds=3)
    assert seconds >= 0.002


def test_spread_is_the_interquartile_range_over_the_median():
    t = Timing(samples=[1.0, 1.0, 1.0, 1.0, 2.0])
    assert t.median == 1.0 and t.spread == 0.0 and not t.noisy
    t = Timing(samples=[1.0, 1.2, 1.0, 0.8, 1.0])
    q1, q3 = 1.0, 1.0
    assert t.spread == pytest.approx((q3 - q1) / 1.0)
    t = Timing(samples=[0.8, 0.9, 1.0, 1.1, 1.2])
    assert t.spread == pytest.approx(0.2) and t.noisy and SPREAD_WARNING == 0.10
    record = t.as_dict("step")
    assert record["step_ms"] == pytest.approx(1000.0) and len(record["step_samples_ms"]) == 5


def test_rounds_must_be_positive():
    with pytest.raises(ValueError, match="rounds"):
        interleaved({"a": lambda: None}, "cpu", rounds=0)


def test_paired_ratio_cancels_a_slow_spell_that_moves_both_variants():
    # Round 3 ran on a busy machine: both variants 1.5x slower. Per round, b is 1.05x a.
    a = [10.0, 10.0, 15.0, 10.0, 10.0]
    b = [10.5, 10.5, 15.75, 10.5, 10.5]
    ratio = paired_ratio(b, a)
    assert ratio.median == pytest.approx(1.05) and ratio.q1 == pytest.approx(1.05)
    assert ratio.verdict == "above"
    assert paired_ratio(a, b).verdict == "below"
    assert paired_ratio(a, b).as_dict()["median"] == pytest.approx(1 / 1.05)


def test_paired_ratio_says_parity_when_the_rounds_straddle_one():
    ratio = paired_ratio([1.1, 0.9, 1.05, 0.95, 1.0], [1.0] * 5)
    assert ratio.q1 < 1.0 < ratio.q3 and ratio.verdict == "parity"
    assert paired_ratio([2.0], [1.0]) == PairedRatio(2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="equal length"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        paired_ratio([], [])


def test_paired_samples_come_from_the_same_rounds():
    timings = interleaved({"a": lambda: None, "b": lambda: None}, "cpu", min_run_time=0.004, rounds=4)
    ratio = paired_ratio(timings["b"].samples, timings["a"].samples)
    assert ratio.q1 <= ratio.median <= ratio.q3
