"""Checks the benchmark's timer against a plain ``time.perf_counter`` loop over the same training
step (compact SmallNet k=7, SGD): the two must agree within 15%.

    python -m bench.check_timer --threads 2 --batch 128
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.timing import call_seconds, interleaved  # noqa: E402

from . import report  # noqa: E402
from .network import network_variants  # noqa: E402


def plain_loop_seconds(step, steps: int, device: torch.device) -> float:
    """Median of per-step wall times, each step synchronised: the simplest honest measurement."""
    return statistics.median(call_seconds(step, device, steps))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--model", default="smallnet7")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--min-run-time", type=float, default=2.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = report.environment(device, sys.argv[1:] if argv is None else list(argv), "bench.check_timer")
    compact = network_variants(args.model, [], [], args.batch, device)[0]
    for _ in range(3):
        compact.step()
    # plain, timer, plain: a drift of the machine shows as a difference between the two plain runs.
    plain_before = plain_loop_seconds(compact.step, args.steps, device)
    timing = interleaved({"compact": compact.step}, device, min_run_time=args.min_run_time)["compact"]
    plain_after = plain_loop_seconds(compact.step, args.steps, device)
    plain = statistics.median([plain_before, plain_after])
    ratio = timing.median / plain
    verdict = "OK" if abs(ratio - 1) <= 0.15 else "DISAGREE"
    print(f"{args.model} compact SGD step, batch {args.batch}, {torch.get_num_threads()} threads on {env['device']}:\n"
          f"  plain perf_counter loop   {1e3 * plain_before:.2f} ms before, {1e3 * plain_after:.2f} ms after\n"
          f"  bench timer (round-robin) {1e3 * timing.median:.2f} ms (spread {100 * timing.spread:.0f}%)\n"
          f"  timer / plain = {ratio:.3f}  {verdict} (tolerance 15%)")
    record = {"environment": env, "plain_ms": [1e3 * plain_before, 1e3 * plain_after],
              "timer_ms": 1e3 * timing.median, "timer_spread": timing.spread, "ratio": ratio, "verdict": verdict}
    out = pathlib.Path(args.out).resolve() if args.out else (
        (report.REPO / "bench" / "results" / ("" if device.type == "cuda" else "local")) if report.IN_CHECKOUT
        else pathlib.Path.cwd() / "bench_results") / f"{report.slug(env['device'])}-{env['date'][:10]}-timer.json"
    report.write_json(out, record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
