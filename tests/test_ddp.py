"""DDP over two gloo processes on CPU gives the same gradients as one process on the whole batch."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import expandnets_cuda as ec
from helpers import assert_rel_close


def _model():
    torch.manual_seed(1)
    return nn.Sequential(
        ec.FusedExpandConv2d(3, 6, 3, padding=1, rate=2, backend="torch"), nn.ReLU(),
        ec.FusedExpandConv2d(6, 4, 5, stride=2, padding=2, strategy="ck", rate=2, backend="torch"),
        nn.Flatten(), ec.FusedExpandLinear(4 * 4 * 4, 5, rate=2, backend="torch")).double()


def _data():
    generator = torch.Generator().manual_seed(2)
    return (torch.randn(8, 3, 8, 8, dtype=torch.float64, generator=generator),
            torch.randint(0, 5, (8,), generator=generator))


def _worker(rank: int, world: int, init_file: str, out_file: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        x, y = _data()
        shard = slice(rank * 4, rank * 4 + 4)
        nn.functional.cross_entropy(model(x[shard]), y[shard]).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in model.module.named_parameters()}, out_file)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_one(tmp_path):
    out_file = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out_file), nprocs=2, join=True)
    ddp_grads = torch.load(out_file, weights_only=True)
    model = _model()
    x, y = _data()
    nn.functional.cross_entropy(model(x), y).backward()
    assert ddp_grads.keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        assert_rel_close(ddp_grads[name], p.grad, 1e-10, f"DDP grad {name}")
