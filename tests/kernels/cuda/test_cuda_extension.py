"""The built CUDA extension, loaded on a machine without a GPU: it defines exactly the ops the
Python side calls (kernels/cuda/schemas.py), each with a fake implementation, the differentiable
ones with an autograd formula. Runs where ``expandnets_cuda._C`` is built (CI's GPU-stack step,
tools/gpu_stack.sh, fails rather than skips without it); the training step through these ops
is tests/nn/test_fake_cuda_step.py."""
import pathlib

import pytest
import torch

from fake_cuda import require_extension

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "expandnets_cuda"


@pytest.fixture(scope="module")
def schemas():
    require_extension()
    import expandnets_cuda._C  # noqa: F401
    from expandnets_cuda.kernels.cuda import chain_ops  # noqa: F401
    from expandnets_cuda.kernels.cuda import ck_worklist_ops  # noqa: F401
    from expandnets_cuda.kernels.cuda import compose_ops  # noqa: F401
    from expandnets_cuda.kernels.cuda import conv_ops  # noqa: F401
    from expandnets_cuda.kernels.cuda import schemas  # noqa: F401
    from expandnets_cuda.kernels.cuda import worklist_ops  # noqa: F401
    return schemas


def test_the_library_defines_every_op_the_python_side_calls_with_its_schema(schemas):
    assert schemas.registered().keys() == schemas.SCHEMAS.keys()
    assert schemas.mismatches() == []


def test_a_changed_schema_is_found_and_the_backend_refuses_it(schemas, monkeypatch):
    monkeypatch.setitem(schemas.SCHEMAS, "cuda_ck_fold", "(Tensor earlier, Tensor later) -> Tensor")
    monkeypatch.setitem(schemas.SCHEMAS, "cuda_unheard_of", "(Tensor x) -> Tensor")
    monkeypatch.delitem(schemas.SCHEMAS, "cuda_chain")
    problems = "\n".join(schemas.mismatches())
    assert "cuda_ck_fold(Tensor later, Tensor earlier) -> Tensor where this package calls cuda_ck_fold(Tensor earlier" \
        in problems
    assert "cuda_unheard_of is missing" in problems
    assert "cuda_chain(Tensor x" in problems and "nothing here calls it" in problems
    import expandnets_cuda.kernels.cuda as cb
    from expandnets_cuda.backends.registry import BackendUnavailableError
    monkeypatch.setattr(cb, "unavailable_reason", lambda: None)  # as if a GPU were there
    with pytest.raises(BackendUnavailableError, match="built from other sources.*rebuild"):
        cb.load_composer()


def test_every_op_has_a_fake_and_the_differentiable_ones_an_autograd(schemas):
    from torch._library import simple_registry
    for name in schemas.SCHEMAS:
        qualified = f"{schemas.NAMESPACE}::{name}"
        fake = simple_registry.singleton.find(qualified).fake_impl.kernel
        assert fake is not None, f"{name} has no fake implementation (torch.library.register_fake)"
        assert "expandnets_cuda" in fake.source, (name, fake.source)
        has_autograd = torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "Autograd")
        assert has_autograd == (name in schemas.DIFFERENTIABLE), \
            f"{name}: autograd registered {has_autograd}, expected {name in schemas.DIFFERENTIABLE}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA"), f"{name} has no CUDA kernel"


def test_every_op_is_called_from_the_python_side(schemas):
    sources = "\n".join(p.read_text() for p in (PACKAGE / "kernels" / "cuda").glob("*.py") if p.name != "schemas.py")
    unused = [name for name in schemas.SCHEMAS if f"torch.ops.{schemas.NAMESPACE}.{name}\n" not in sources]
    assert not unused, f"declared but never called: {unused}"
