"""One timer for the library and its benchmarks: medians of callables, timed round-robin.

Variants of one comparison are timed *interleaved*: each round times every variant once (in an
order that rotates from round to round), so a slow spell of a shared machine lands on all of
them instead of on whichever happened to run then. Per variant we report the median over rounds
and the spread (interquartile range / median).

CUDA: each round's sample is ``triton.testing.do_bench`` (device events, warm-up, L2 flush,
median) when Triton is installed, else CUDA events around a block of calls.
CPU: each round's sample is the mean of a calibrated block of calls, timed with
``time.perf_counter`` in the calling thread, so it runs at the thread count torch is set to
(``torch.utils.benchmark.Timer`` defaults to *one* thread, whatever the process uses).

Two variants of one round-robin are compared round by round (``paired_ratio``): their samples of
the same round ran seconds apart, so a slow spell that lasts a round moves both and cancels in
their ratio, where the ratio of the two medians keeps it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Sequence

import torch

SPREAD_WARNING = 0.10  # a result whose spread exceeds 10% of its median is marked noisy


@dataclass
class Timing:
    """Seconds per call of one variant: one sample per round."""
    samples: List[float] = field(default_factory=list)
    threads: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0 with fewer than 4 rounds' worth of spread)."""
        if len(self.samples) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return (q3 - q1) / self.median

    @property
    def noisy(self) -> bool:
        return self.spread > SPREAD_WARNING

    def as_dict(self, prefix: str, scale: float = 1e3) -> Dict[str, object]:
        """``{prefix}_ms``, ``{prefix}_spread`` and the raw samples (ms) for a JSON record."""
        return {f"{prefix}_ms": self.median * scale, f"{prefix}_spread": self.spread,
                f"{prefix}_samples_ms": [s * scale for s in self.samples]}


@dataclass(frozen=True)
class PairedRatio:
    """Per-round ratio of two variants' times: its median and quartiles over the rounds."""
    median: float
    q1: float
    q3: float

    @property
    def verdict(self) -> str:
        """``"above"`` when at least three rounds in four put the ratio above 1, ``"below"`` when
        three in four put it below, else ``"parity"`` (the noise straddles 1)."""
        if self.q1 > 1.0:
            return "above"
        if self.q3 < 1.0:
            return "below"
        return "parity"

    def as_dict(self) -> Dict[str, object]:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "verdict": self.verdict}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> PairedRatio:
    """``numerator[k] / denominator[k]`` per round ``k`` of one :func:`interleaved` run (sample
    lists of equal length, in round order), summarised by median and quartiles."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"paired samples must be non-empty and of equal length, got {len(numerator)} "
                         f"and {len(denominator)}")
    ratios = [a / b for a, b in zip(numerator, denominator)]
    if len(ratios) == 1:
        return PairedRatio(ratios[0], ratios[0], ratios[0])
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return PairedRatio(median, q1, q3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _block_seconds(fn: Callable[[], object], number: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / number


def _calls_per_block(fn: Callable[[], object], seconds: float, device: torch.device) -> int:
    """Calls per sample so that one block takes about ``seconds`` (after one warm-up call)."""
    fn()
    once = max(_block_seconds(fn, 1, device), 1e-7)
    if once < seconds / 4:  # cheap call: a second estimate over several calls is steadier
        once = max(_block_seconds(fn, max(int(seconds / 4 / once), 1), device), 1e-7)
    return max(1, int(round(seconds / once)))


def _cuda_sample(fn: Callable[[], object], seconds: float) -> float:
    try:
        import triton.testing
    except ImportError:
        return _cuda_events_sample(fn, seconds)
    return triton.testing.do_bench(fn, warmup=5, rep=max(int(seconds * 1e3), 5), return_mode="median") / 1e3


def _cuda_events_sample(fn: Callable[[], object], seconds: float) -> float:
    number = _calls_per_block(fn, seconds, torch.device("cuda"))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(number):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / number


def interleaved(fns: Mapping[str, Callable[[], object]], device, *, min_run_time: float = 0.2,
                rounds: int = 7) -> Dict[str, Timing]:
    """Time every callable of ``fns`` round-robin; about ``min_run_time`` seconds per variant in all.

    Returns ``{name: Timing}`` with ``rounds`` samples each. Every callable is called once before
    any timing (warm-up: allocator, autotuning caches, lazy initialisation).
    """
    device = torch.device(device)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(fns)
    threads = torch.get_num_threads()
    block = min_run_time / rounds
    if device.type == "cuda":
        for name in names:
            fns[name]()
        number = {}
    else:
        number = {name: _calls_per_block(fns[name], block, device) for name in names}
    out = {name: Timing(threads=threads) for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if device.type == "cuda":
                sample = _cuda_sample(fns[name], block)
            else:
                sample = _block_seconds(fns[name], number[name], device)
            out[name].samples.append(sample)
    return out


def call_seconds(fn: Callable[[], object], device, calls: int) -> List[float]:
    """Wall seconds of each of ``calls`` single calls, synchronised on CUDA: the plainest
    measurement (what the interleaved timer is checked against; a roofline's best rate)."""
    device = torch.device(device)
    return [_block_seconds(fn, 1, device) for _ in range(calls)]


def median_seconds(fn: Callable[[], object], device, min_run_time: float = 0.2, rounds: int = 5) -> float:
    """Median seconds per call of one callable (the one-variant case of :func:`interleaved`)."""
    return interleaved({"fn": fn}, device, min_run_time=min_run_time, rounds=rounds)["fn"].median
