"""One process of tests/test_concurrency.py: training with ``backend="auto"`` (or storing choices in
a tight loop) against the auto-backend cache directory it shares with another process.

    python tests/concurrency_worker.py train ROLE ROUNDS OUT [SYNC_DIR]
    python tests/concurrency_worker.py hammer ROLE KEYS OUT [SYNC_DIR]
    python tests/concurrency_worker.py both ROLE KEYS,ROUNDS OUT [SYNC_DIR]   # hammer, then train

EXPANDNETS_CACHE_DIR names the shared cache. With SYNC_DIR the worker writes ``ready_ROLE`` there
once imported and waits for ``go`` before its first step, so that two workers start together.
A second, deliberately slower convolver ("slow": a short sleep, then the same F.conv2d/F.linear)
gives ``auto`` two pairs to measure on a CPU; both compute bit for bit the same, so the results
do not depend on which one a measurement picks. OUT receives a JSON record of what ran.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import expandnets_cuda as ec  # noqa: E402
from expandnets_cuda.backends import auto as autotune  # noqa: E402
from expandnets_cuda.backends import registry as backends  # noqa: E402

SLOW_SECONDS = 0.002


def register_slow_convolver() -> None:
    """The second (slower, bitwise identical) convolver ``auto`` measures against the torch pair."""
    def slow_conv2d(*args):
        time.sleep(SLOW_SECONDS)
        return F.conv2d(*args)

    def slow_linear(*args):
        time.sleep(SLOW_SECONDS)
        return F.linear(*args)

    backends._CONVOLVER_LOADERS["slow"] = lambda: backends.Convolver("slow", slow_conv2d, slow_linear)
    backends._LOADED.pop(("convolver", "slow"), None)
    autotune._FOUND.clear()


def unregister_slow_convolver() -> None:
    backends._CONVOLVER_LOADERS.pop("slow", None)
    backends._LOADED.pop(("convolver", "slow"), None)
    autotune._FOUND.clear()


def _wait_for_go(sync_dir, role: str) -> None:
    if not sync_dir:
        return
    open(os.path.join(sync_dir, f"ready_{role}"), "w").close()
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(sync_dir, "go")):
        if time.time() > deadline:
            raise TimeoutError("no go signal")
        time.sleep(0.002)


# Per round: layer shapes both roles train (the same keys, measured by whichever gets there
# first) and ones only this role trains (keys only this role writes), so the final cache must
# hold the union of both processes' entries.
def round_shapes(role: str, r: int):
    shared = [("conv", 3, 4, 3, 6), ("linear", 6, 4, 0, 0)]
    own = {"A": [("conv", 2, 3, 3, 5 + r), ("linear", 5, 3 + r, 0, 0)],
           "B": [("conv", 3, 2, 3, 7 + r), ("linear", 7, 2 + r, 0, 0)]}[role]
    return shared + own


def _unit(kind, cin, cout, k, size):
    if kind == "conv":
        unit = ec.FusedExpandConv2d(cin, cout, k, padding=1, rate=2, dtype=torch.float64, backend="auto")
        x = torch.randn(2, cin, size, size, dtype=torch.float64)
    else:
        unit = ec.FusedExpandLinear(cin, cout, rate=2, dtype=torch.float64, backend="auto")
        x = torch.randn(3, cin, dtype=torch.float64)
    return unit, x


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(role: str, rounds: int, sync_dir=None) -> dict:
    """A few SGD steps on each of this round's units, seeded per (role, round, unit): returns the
    losses and a digest of the final parameters, and the cache keys this role's units needed."""
    register_slow_convolver()
    _wait_for_go(sync_dir, role)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same in every process and in the serial run
    try:
        return _train(role, rounds)
    finally:
        torch.set_num_threads(threads)


def _train(role: str, rounds: int) -> dict:
    losses, digests, needed = [], [], set()
    for r in range(rounds):
        for j, shape in enumerate(round_shapes(role, r)):
            torch.manual_seed(1000 * r + j + (0 if role == "A" else 500))
            unit, x = _unit(*shape)
            opt = torch.optim.SGD(unit.parameters(), lr=0.05, momentum=0.9)
            for _ in range(3):
                loss = unit(x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            digests.append(_digest(unit.parameters()))
            needed.add(autotune.layer_key(unit, x))
    return {"losses": losses, "digests": digests, "needed": sorted(needed)}


def hammer(role: str, keys: int, sync_dir=None) -> dict:
    """``keys`` cache misses in a tight loop (the measurement replaced by fixed times, so that the
    stores of two processes overlap): every one must be in the file afterwards."""
    register_slow_convolver()
    autotune.measure = lambda unit, x, candidates: {pair.name: (1e-3 if pair.name == "torch" else 2e-3)
                                                    for pair in candidates}
    unit = ec.FusedExpandLinear(4, 3, rate=2)
    offset = 0 if role == "A" else keys
    xs = [torch.zeros(offset + n + 1, 4) for n in range(keys)]
    _wait_for_go(sync_dir, role)
    needed = []
    for x in xs:
        assert autotune.choose(unit, x).name == "torch"
        needed.append(autotune.layer_key(unit, x))
    return {"needed": needed}


def main(argv) -> None:
    mode, role, count, out = argv[:4]
    sync_dir = argv[4] if len(argv) > 4 else None
    if mode == "both":
        keys, rounds = map(int, count.split(","))
        record = {"hammer": hammer(role, keys, sync_dir), "train": train(role, rounds)}
    else:
        record = (train if mode == "train" else hammer)(role, int(count), sync_dir)
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(sys.argv[1:])
