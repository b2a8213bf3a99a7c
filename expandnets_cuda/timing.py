"""One sound timer for the library and its benchmarks: median seconds of a callable.

CUDA: ``triton.testing.do_bench`` (device events, warm-up, cache flush, median) when Triton is
installed, else CUDA events around repeated calls after warm-up. CPU: ``torch.utils.benchmark``
(warm-up and blocked auto-ranging, median of blocks)."""
from __future__ import annotations

import statistics
from typing import Callable

import torch


def median_seconds(fn: Callable[[], object], device: torch.device, min_run_time: float = 0.2) -> float:
    device = torch.device(device)
    if device.type == "cuda":
        try:
            import triton.testing
        except ImportError:
            return _cuda_events_median(fn)
        return triton.testing.do_bench(fn, warmup=25, rep=max(int(min_run_time * 1e3), 50),
                                       return_mode="median") / 1e3
    from torch.utils import benchmark
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def _cuda_events_median(fn: Callable[[], object], warmup: int = 10, reps: int = 50) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)
