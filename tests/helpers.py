"""Comparison helpers shared by the tests: relative-norm errors with messages that say where."""
from __future__ import annotations

import torch

# ||actual - expected|| / ||expected|| allowed per compute dtype (docs/design.md section 4).
REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-300)).item()


def assert_rel_close(actual, expected, tol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert expected.abs().max() > 0, f"{what}: reference is all zeros, the comparison would prove nothing"
    err = rel_error(actual, expected)
    worst = (actual.detach().double() - expected.detach().double()).abs().max().item()
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} (max abs diff {worst:.3e})"


def _dtype_of(module) -> torch.dtype:
    return next(module.parameters()).dtype


def compare_units(fast, ref, x: torch.Tensor, tol: float, label: str = "") -> None:
    """Output, input gradient and the gradient of every expanded parameter, by name. ``fast`` and
    ``ref`` may hold different dtypes (a bf16 module against a float64 reference): each gets ``x``
    in its own dtype, layout kept."""
    x_fast = x.detach().to(_dtype_of(fast)).requires_grad_(True)
    x_ref = x.detach().to(_dtype_of(ref)).requires_grad_(True)
    y_fast, y_ref = fast(x_fast), ref(x_ref)
    assert_rel_close(y_fast, y_ref, tol, f"{label} output")
    grad_out = torch.randn_like(y_ref)
    fast_params, ref_params = dict(fast.named_parameters()), dict(ref.named_parameters())
    assert fast_params.keys() == ref_params.keys()
    names = list(ref_params)
    g_fast = torch.autograd.grad(y_fast, [x_fast, *(fast_params[n] for n in names)], grad_out.to(y_fast.dtype))
    g_ref = torch.autograd.grad(y_ref, [x_ref, *(ref_params[n] for n in names)], grad_out)
    for name, a, b in zip(["input", *names], g_fast, g_ref):
        assert_rel_close(a, b, tol, f"{label} grad of {name}")


def twin(fast_cls, ref_cls, *args, **kwargs):
    """A fused module and its reference twin holding the same (fresh random) parameters."""
    backend = kwargs.pop("backend", "auto")
    ref = ref_cls(*args, **kwargs)
    fast = fast_cls(*args, backend=backend, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return fast, ref


def native_backends(device_type: str = "cpu"):
    """Available fused backends that run natively on ``device_type`` (no Triton interpreter),
    plus ``auto``; the interpreted Triton kernels have their own, smaller test file."""
    import expandnets_cuda as ec
    return ["reference"] + [pair.name for pair in ec.backends.registry.candidate_pairs(torch.device(device_type))] + ["auto"]


# Convolution-kernel cases shared by the Triton and CUDA backend tests (small enough for the
# Triton interpreter): (N, C, H, W, O, kernel, stride, padding, dilation, groups, bias, channels_last)
CONV_KERNEL_CASES = {
    "dense_3x3": (2, 3, 7, 6, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, False),
    "grouped_nonsquare_s2_d2": (1, 4, 9, 8, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, True, True),
    "depthwise_s2": (2, 4, 7, 7, 4, (3, 3), (2, 2), (1, 1), (1, 1), 4, True, False),
    "depthwise_dilated_nobias": (1, 4, 6, 5, 4, (3, 3), (1, 1), (1, 1), (2, 2), 4, False, True),
    "depthwise_multiplier": (1, 2, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, True, False),
    "pointwise_s2_grouped": (2, 3, 5, 5, 6, (1, 1), (2, 2), (0, 0), (1, 1), 3, False, False),
    "k7_pad3_batch1": (1, 2, 6, 6, 3, (7, 7), (1, 1), (3, 3), (1, 1), 1, True, False),
}


def randomise_bn(model):
    """Non-trivial BN statistics, so eval-mode comparisons exercise them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model


def capture_in_cuda_graph(fn, warmups: int = 1, grad: bool = True):
    """``fn`` run ``warmups`` times on a side stream (compiles kernels, builds the caches a capture
    may not build), then captured: ``(graph, fn's output, living in the graph's memory)``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.set_grad_enabled(grad):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.set_grad_enabled(grad):
        out = fn()
    return graph, out


def record_launches(monkeypatch, specs) -> list:
    """Patch each gate spec's Triton kernel so every launch appends ``(kernel name, WIDE)`` to the
    returned list."""
    seen = []
    for spec in specs:
        fn = spec.jit_function
        original = fn.run

        def run(*args, _original=original, _name=spec.name, **kwargs):
            seen.append((_name, kwargs["WIDE"]))
            return _original(*args, **kwargs)
        monkeypatch.setattr(fn, "run", run)
    return seen


def _param(dtype, device):
    def param(*shape):
        return torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)
    return param


def random_cl_unit(groups, a, i, c, o, kh, kw, bias, dtype=torch.float64, device="cpu") -> tuple:
    """A composer's ``cl`` arguments ``(w1, b1, w2, b2, w3, b3, groups)`` for a random unit."""
    param = _param(dtype, device)
    return (param(groups * a, i, 1, 1), param(groups * a) if bias else None, param(groups * c, a, kh, kw),
            param(groups * c) if bias else None, param(groups * o, c, 1, 1), param(groups * o) if bias else None,
            groups)


def cl_unit_tensors(units) -> list:
    return [t for unit in units for t in unit[:6] if t is not None]


def random_ck_unit(channels, bias, taps=None, dtype=torch.float64, device="cpu") -> tuple:
    """``(weights, biases)`` of a random CK unit whose layer j maps ``channels[j]`` to
    ``channels[j + 1]`` channels; 3x3 kernels unless ``taps`` gives each layer's ``(kh, kw)``."""
    n = len(channels) - 1
    taps = taps or [(3, 3)] * n
    param = _param(dtype, device)
    weights = [param(channels[j + 1], channels[j], *taps[j]) for j in range(n)]
    biases = [param(channels[j + 1]) for j in range(n)] if bias else None
    return weights, biases


def ck_unit_tensors(units) -> list:
    return [t for weights, biases in units for t in (*weights, *(biases or ()))]


def flat_composed(composed) -> list:
    """The tensors of a list of ``(W, b or None)``."""
    return [t for pair in composed for t in pair if t is not None]


# Randomised tests at scale (tests/test_random_*.py, test_fuzz_inputs.py, test_soak.py): one seed
# per pytest run, drawn fresh unless EXPANDNETS_TEST_SEED replays one (the header prints it), and
# case counts scaled by EXPANDNETS_TEST_SCALE (1.0 in the README's test command; the second pass of
# the suite under torch 2.11 in tools/gpu_stack.sh runs a quarter).
def _run_seed() -> int:
    import os
    import random
    given = os.environ.get("EXPANDNETS_TEST_SEED")
    if given:
        return int(given)
    seed = random.SystemRandom().randrange(2**31)
    os.environ["EXPANDNETS_TEST_SEED"] = str(seed)  # subprocesses of the tests draw the same
    return seed


RUN_SEED = _run_seed()


def scaled(count: int, minimum: int = 1) -> int:
    """``count`` random cases, times EXPANDNETS_TEST_SCALE (never fewer than ``minimum``)."""
    import os
    return max(minimum, round(count * float(os.environ.get("EXPANDNETS_TEST_SCALE", "1"))))


def case_rng(name: str, index: int = 0):
    """A ``random.Random`` for case ``index`` of test ``name`` in this run: each case replays from
    (seed, name, index) alone, whatever ran before it."""
    import random
    return random.Random(f"{RUN_SEED}:{name}:{index}")


def replay(name: str, index: int, spec) -> str:
    """What a failure message says so the case can be run again."""
    return (f"[{name} case {index}, seed {RUN_SEED}: replay with EXPANDNETS_TEST_SEED={RUN_SEED}] spec={spec!r}")


def chunk_indices(total: int, chunks: int, chunk: int) -> range:
    """Case indices of chunk ``chunk`` when ``total`` cases are split into ``chunks``."""
    return range(chunk * total // chunks, (chunk + 1) * total // chunks)


def run_chunk(name: str, indices: range, run_case, describe) -> int:
    """Runs ``run_case(i)`` for every index (``EXPANDNETS_TEST_CASE=i``: that case only); fails
    with every failing index, the first one's whole error and ``replay`` text (``describe(i)`` is
    its spec). Returns how many cases ran, all of them passing."""
    import os
    import pytest
    only = os.environ.get("EXPANDNETS_TEST_CASE")
    if only is not None:
        if int(only) not in indices:
            pytest.skip(f"EXPANDNETS_TEST_CASE={only} is in another chunk")
        indices = [int(only)]
    assert len(indices) > 0, "an empty chunk would prove nothing"
    failures = []
    for index in indices:
        try:
            run_case(index)
        except Exception as err:  # noqa: BLE001 - a crash of the case is a failure too
            failures.append((index, err))
    if failures:
        index, err = failures[0]
        lines = [f"{len(failures)} of {len(indices)} cases failed: indices {[i for i, _ in failures]}",
                 f"first: {type(err).__name__}: {err}", replay(name, index, describe(index)),
                 f"(EXPANDNETS_TEST_SEED={RUN_SEED} EXPANDNETS_TEST_CASE={index} runs it alone)"]
        lines += [f"also: {replay(name, i, describe(i))}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
                  for i, e in failures[1:10]]
        pytest.fail("\n".join(lines))
    return len(indices)


def torch_threads(count: int):
    """A context with torch at ``count`` intra-op threads, restored after. Thousands of tiny ops run
    fastest at one thread, and far faster on a loaded machine (OpenMP workers spin while the other
    cores are busy)."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        before = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(before)
    return scope()
