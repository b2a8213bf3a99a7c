"""Network-level composition (installed by expand_model): same function and gradients as the
units alone and as the unfused chain, launches added per step independent of depth, and a step
free of host synchronisation (CUDA-graph ready)."""
import contextlib

import pytest
import torch
from torch import nn

import expandnets_cuda as ec
from bench.launches import count_step_launches
from expandnets_cuda.nn import network as network_composition
from helpers import capture_in_cuda_graph
from network_cases import (NoHostSync, as_reference, assert_steps_match, chain_net, mixed_net,
                           triton_added_launches, without_network_composition)


@contextlib.contextmanager
def registered_composer(composer):
    """``composer`` registered under its name for the block (then removed again)."""
    from expandnets_cuda.backends import registry as backends
    backends.register_composer(composer.name, lambda: composer)
    try:
        yield composer
    finally:
        backends._COMPOSER_LOADERS.pop(composer.name)
        backends._LOADED.pop(("composer", composer.name), None)





@pytest.mark.parametrize("strategy", ["cl", "ck"])
def test_network_composed_step_matches_units_alone_and_the_unfused_chain(strategy):
    torch.manual_seed(0)
    fused = ec.expand_model(mixed_net(), strategy, 2, fc=True, backend="torch").double()
    assert fused.__dict__.get("_network_composer") is not None
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert_steps_match(fused, (without_network_composition(fused), as_reference(fused)), x)
    groups = fused._network_composer.groups()
    assert sum(len(units) for _, units in groups.values()) == len(fused._network_composer.units)
    assert all(network_composition.STAGED not in unit.__dict__ for unit in fused.modules())


def test_equal_units_form_one_group_composed_by_one_call():
    model = ec.expand_model(chain_net(4), "cl", 2, fc=True, backend="torch")
    model(torch.randn(1, 6, 6, 6))
    composer = model._network_composer
    assert len(composer.groups()) == 2  # the four equal convs, and the head
    assert composer.compose() == 2
    composer.clear()


@pytest.fixture
def counting_network_composer():
    """A composer named ``network-test`` whose ``cl_network`` records each call (and composes unit by
    unit with the torch composer, so only the routing is under test)."""
    from expandnets_cuda.backends import registry as backends
    from expandnets_cuda.compose import cl
    calls = []

    def cl_network(units):
        calls.append([tuple(args[2].shape) for args in units])
        return [cl.compose_cl(*args) for args in units]

    torch_composer = backends.resolve("torch").composer
    with registered_composer(backends.Composer("network-test", torch_composer.cl, torch_composer.ck, torch_composer.fc,
                                               cl_network=cl_network)):
        yield calls


def test_a_cl_network_composer_composes_units_of_every_shape_in_one_call(counting_network_composer):
    """Three CL convs of different shapes (one grouped) and three FC layers: one ``cl_network`` call
    per forward, with the same outputs and gradients as the unfused chain."""
    torch.manual_seed(0)
    fused = ec.expand_model(mixed_net(), "cl", 2, fc=True, backend="network-test+torch").double()
    assert_steps_match(fused, (as_reference(fused),), torch.randn(2, 3, 6, 6, dtype=torch.float64))
    assert len(counting_network_composer) == 1, counting_network_composer
    assert len(counting_network_composer[0]) == 6 and len(set(counting_network_composer[0])) == 6  # all W2 shapes differ
    assert fused._network_composer.compose() == 1
    fused._network_composer.clear()


def test_a_ck_network_composer_composes_every_ck_unit_in_one_call():
    """CK units of different kernel sizes (5x5: two 3x3, 7x7: three) through a composer's
    ``ck_network``: one call per forward, the unfused chain's outputs and gradients."""
    from expandnets_cuda.backends import registry as backends
    from expandnets_cuda.compose import ck
    calls = []

    def ck_network(units):
        calls.append([len(weights) for weights, _ in units])
        return [ck.compose_ck(weights, biases) for weights, biases in units]

    torch_composer = backends.resolve("torch").composer
    composer = backends.Composer("ck-network-test", torch_composer.cl, torch_composer.ck, torch_composer.fc,
                                 ck_network=ck_network)
    with registered_composer(composer):
        model = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 6, 7, padding=3),
                              nn.ReLU(), nn.Conv2d(6, 6, 5, padding=2), nn.Flatten(), nn.Linear(6 * 6 * 6, 3))
        torch.manual_seed(0)
        fused = ec.expand_model(model, "ck", 2, backend="ck-network-test+torch").double()
        assert_steps_match(fused, (as_reference(fused),), torch.randn(2, 3, 6, 6, dtype=torch.float64))
        assert calls == [[2, 3, 2]]


def test_cpu_batches_only_small_equal_units():
    small = ec.expand_model(chain_net(2), "cl", 2, backend="torch")
    large = ec.expand_model(chain_net(2, channels=64), "cl", 4, backend="torch")
    for model, batched in ((small, True), (large, False)):
        model(torch.randn(1, model[0].in_channels, 6, 6))
        composer = model._network_composer
        (unit_composer, units), = [group for group in composer.groups().values() if len(group[1]) == 2]
        assert network_composition._batchable(units[0], unit_composer) is batched


def _added_launches(depth: int, strategy: str = "cl", **expand) -> int:
    torch.manual_seed(0)
    x, y = torch.randn(2, 6, 6, 6), torch.randint(0, 5, (2,))
    compact = count_step_launches(chain_net(depth), x, y)["launches"]
    fused = ec.expand_model(chain_net(depth), strategy, 2, backend="torch", **expand)
    return count_step_launches(fused, x, y)["launches"] - compact


@pytest.mark.parametrize("fc", [False, True])
def test_launches_added_per_step_do_not_grow_with_depth(fc):
    two, six = _added_launches(2, fc=fc), _added_launches(6, fc=fc)
    assert two == six, f"a fused network adds {two} launches per step at depth 2 but {six} at depth 6"
    # ... while the units composing alone add launches per unit.
    x, y = torch.randn(2, 6, 6, 6), torch.randint(0, 5, (2,))
    alone = [count_step_launches(without_network_composition(ec.expand_model(chain_net(d), "cl", 2, backend="torch")), x, y)
             ["launches"] - count_step_launches(chain_net(d), x, y)["launches"] for d in (2, 6)]
    assert alone[1] > alone[0] > 0


def test_triton_launches_added_per_step_do_not_grow_with_depth_and_gradients_match():
    pytest.importorskip("triton")
    # 1x3 kernels keep the interpreter's grids small
    added, library = triton_added_launches("cl", (2, 6), 4, (1, 3), 2, "triton network-composed", fc=True)
    assert added[0] == added[1] and library[0] == library[1] > 0, (added, library)


def test_evaluation_and_units_alone_still_work():
    model = ec.expand_model(chain_net(2), "cl", 2, backend="torch")
    x = torch.randn(1, 6, 6, 6)
    model(x)
    with torch.no_grad():
        model.eval()(x)  # no staging without autograd: the units' evaluation cache serves
    assert all(network_composition.STAGED not in unit.__dict__ for unit in model.modules())
    unit = model[0]
    out = unit(x)  # called alone, outside the model: composes itself
    assert out.shape == (1, 6, 6, 6)


@pytest.mark.filterwarnings("ignore:expand_model:UserWarning")  # CK leaves the 3x3 layer compact
@pytest.mark.parametrize("strategy", ["cl", "ck"])
def test_a_trained_network_moved_to_meta_still_infers_shapes(strategy):
    """After a step the network composer groups the units; on the meta device (shape inference,
    deferred init) its composition must run without autocast, which meta does not have."""
    model = ec.expand_model(mixed_net(), strategy, 2, fc=True, backend="torch")
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    model.to("meta")
    for _ in range(2):  # the second forward composes the grouped units through the network
        y = model(torch.randn(2, 3, 6, 6, device="meta"))
        y.sum().backward()
    assert y.shape == (2, 4) and y.device.type == "meta"
    assert all(p.grad.device.type == "meta" for p in model.parameters())


# --- CUDA-graph readiness: nothing in the step asks the host for a tensor's value -------------



@pytest.mark.parametrize("strategy", ["cl", "ck"])
def test_training_step_needs_no_host_value(strategy):
    model = ec.expand_model(mixed_net(), strategy, 4, fc=True, backend="torch")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(2, 3, 6, 6), torch.randint(0, 4, (2,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()  # first step: caches and the network composer's groups
    with NoHostSync():
        step()
        step()


def test_no_host_sync_mode_catches_item():
    with pytest.raises(AssertionError, match="host"):
        with NoHostSync():
            torch.ones(2).sum().item()


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_fused_training_step_captures_in_a_cuda_graph(backend):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if backend not in ec.available_backends() or not ec.available_backends()[backend].available:
        pytest.skip(f"backend {backend} unavailable")
    torch.manual_seed(0)
    model = ec.expand_model(mixed_net(), "cl", 4, fc=True, backend=backend).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(8, 3, 6, 6, device="cuda")
    y = torch.randint(0, 4, (8,), device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    # warm-up: autotuning, caches, optimizer state, composer groups
    graph, static_loss = capture_in_cuda_graph(step, warmups=3)
    before = [p.detach().clone() for p in model.parameters()]
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(static_loss).item()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), "the replay changed nothing"
