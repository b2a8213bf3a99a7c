"""Hand-written Triton kernels. Imported only when the ``triton`` backend is first asked for.

On a GPU they compile for the device; on a CPU they run under the Triton interpreter when
``TRITON_INTERPRET=1`` is set before this package is imported (that is how CI tests them).
"""
from expandnets_cuda.backends import TRITON_MISSING_FIX, BackendUnavailableError


def _require_triton() -> None:
    try:
        import triton  # noqa: F401
    except ImportError as err:
        raise BackendUnavailableError(f"triton is not installed ({err})", TRITON_MISSING_FIX) from err


def load_composer():
    _require_triton()
    from expandnets_cuda.triton_backend.composer import load_composer as load
    return load()


def load_convolver():
    _require_triton()
    from expandnets_cuda.triton_backend.convolver import load_convolver as load
    return load()


def load_chain():
    _require_triton()
    from expandnets_cuda.triton_backend.chain_runner import load_chain as load
    return load()
