"""What the DDP and FSDP tests share: a small expanded network, its data, and a clean way to run
2 gloo processes.

Why the teardown is explicit: a DDP (or FSDP) wrapper sits in a reference cycle, and its C++
Reducer holds the gloo process group (worker threads, TCP pairs). ``destroy_process_group()``
alone therefore frees nothing; the group died whenever the garbage collector next ran, which
could be during the spawned interpreter's exit, and tearing gloo's threads down there aborts
the process at random ("terminate called without an active exception", SIGABRT). So every
worker waits for its peer (barrier), drops its wrapper and collects it while both processes
are alive, and only then destroys the process group.
"""
from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import expandnets_cuda as ec

WORLD = 2
BATCH = 8
TIMEOUT = datetime.timedelta(seconds=120)  # a lost peer fails the test instead of hanging CI


def model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        ec.FusedExpandConv2d(3, 6, 3, padding=1, rate=2, backend="torch"), nn.ReLU(),
        ec.FusedExpandConv2d(6, 4, 5, stride=2, padding=2, strategy="ck", rate=2, backend="torch"),
        nn.Flatten(), ec.FusedExpandLinear(4 * 4 * 4, 5, rate=2, backend="torch")).double()


def data():
    generator = torch.Generator().manual_seed(2)
    return (torch.randn(BATCH, 3, 8, 8, dtype=torch.float64, generator=generator),
            torch.randint(0, 5, (BATCH,), generator=generator))


def shard(rank: int):
    per_rank = BATCH // WORLD
    return slice(rank * per_rank, (rank + 1) * per_rank)


def init(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=TIMEOUT)


def teardown() -> None:
    """Call with no wrapper left referenced by the caller (``del`` it first)."""
    dist.barrier()  # the peer is done with every collective
    gc.collect()  # free the wrapper's cycle, and with it the Reducer's hold on the group, now
    dist.destroy_process_group()


def spawn(worker, tmp_path, *args) -> None:
    """Run ``worker(rank, init_file, *args)`` in 2 fresh processes; raises if either fails."""
    init_file = os.path.join(str(tmp_path), "init")
    mp.spawn(worker, args=(init_file, *args), nprocs=WORLD, join=True)
