"""FSDP2 (``fully_shard``) over two gloo processes on CPU: every expanded parameter sharded across
the ranks, the same gradients as one process on the whole batch, and after an SGD step a
contracted network equal to the one a single process trains."""
import pytest
import torch
from torch import nn

import distributed_case as case
import expandnets_cuda as ec
from helpers import assert_rel_close

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)", allow_module_level=True)

LR = 0.5


def _worker(rank: int, init_file: str, out_file: str):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard

    case.init(rank, init_file)
    mesh = init_device_mesh("cpu", (case.WORLD,))
    model = case.model()
    for unit in model:  # one FSDP group per expanded unit: its forward is what reads the weights
        if isinstance(unit, (ec.FusedExpandConv2d, ec.FusedExpandLinear)):
            fsdp.fully_shard(unit, mesh=mesh)
    fsdp.fully_shard(model, mesh=mesh)
    sharded = all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in model.parameters())
    local = sum(p.to_local().numel() for p in model.parameters())

    x, y = case.data()
    nn.functional.cross_entropy(model(x[case.shard(rank)]), y[case.shard(rank)]).backward()
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}  # collectives: every rank
    torch.optim.SGD(model.parameters(), lr=LR).step()
    params = {n: p.full_tensor() for n, p in model.named_parameters()}
    if rank == 0:
        torch.save({"grads": grads, "params": params, "sharded": sharded, "local": local}, out_file)
    del model
    case.teardown()


def test_fsdp2_two_processes_match_one(tmp_path):
    out_file = str(tmp_path / "fsdp.pt")
    case.spawn(_worker, tmp_path, out_file)
    got = torch.load(out_file, weights_only=True)

    model = case.model()
    total = ec.count_params(model)
    assert got["sharded"] and got["local"] < total  # really sharded, not replicated
    x, y = case.data()
    nn.functional.cross_entropy(model(x), y).backward()
    assert got["grads"].keys() == dict(model.named_parameters()).keys()
    for name, p in model.named_parameters():
        assert_rel_close(got["grads"][name], p.grad, 1e-10, f"FSDP grad {name}")
    torch.optim.SGD(model.parameters(), lr=LR).step()

    trained = case.model()
    trained.load_state_dict(got["params"])
    single, sharded = ec.contract_model(model.eval()), ec.contract_model(trained.eval())
    assert [type(m) for m in sharded.modules()] == [type(m) for m in single.modules()]
    for (name, a), (_, b) in zip(sharded.state_dict().items(), single.state_dict().items()):
        assert_rel_close(a, b, 1e-10, f"contracted {name}")
    with torch.no_grad():
        assert_rel_close(sharded(x), single(x), 1e-10, "contracted outputs")
