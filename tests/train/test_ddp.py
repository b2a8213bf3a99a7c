"""DDP over two gloo processes on CPU gives the same gradients as one process on the whole batch.

The teardown (barrier, drop the DDP wrapper, collect, then destroy the group) is what keeps
this from aborting at exit now and then: see ``distributed_case.py``.
"""
import torch
from torch import nn

import distributed_case as case
from helpers import assert_rel_close


def _worker(rank: int, init_file: str, out_file: str):
    case.init(rank, init_file)
    ddp = nn.parallel.DistributedDataParallel(case.model())
    x, y = case.data()
    nn.functional.cross_entropy(ddp(x[case.shard(rank)]), y[case.shard(rank)]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in ddp.module.named_parameters()}, out_file)
    del ddp
    case.teardown()


def test_ddp_two_processes_match_one(tmp_path):
    out_file = str(tmp_path / "grads.pt")
    case.spawn(_worker, tmp_path, out_file)
    ddp_grads = torch.load(out_file, weights_only=True)
    model = case.model()
    x, y = case.data()
    nn.functional.cross_entropy(model(x), y).backward()
    assert ddp_grads.keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        assert_rel_close(ddp_grads[name], p.grad, 1e-10, f"DDP grad {name}")
