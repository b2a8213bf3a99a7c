"""A restricted unpickler for the CIFAR "python version" batches.

Those batches exist only as pickles, so reading them means unpickling. A plain ``pickle.load``
would let a tampered archive import and call anything; this one resolves only the few globals
that plain data (dicts, lists, bytes, numpy arrays) needs and refuses every other one:

- ``numpy.core.multiarray._reconstruct`` (``numpy._core`` since numpy 2), ``numpy.ndarray`` and
  ``numpy.dtype``: what an ndarray's pickle is rebuilt from;
- ``_codecs.encode``: how Python 3 writes ``bytes`` at pickle protocol 2.

Dicts, lists, strings, bytes and numbers need no global at all. The array builders cannot run
code either: an ndarray's state is raw bytes, or (object dtype) objects that this same unpickler
produced; callers still check that the arrays they get have the dtype they expect.
"""
from __future__ import annotations

import codecs
import io
import pickle
from typing import Any, BinaryIO, Callable, Dict, Tuple

import numpy as np

__all__ = ["UnsafePickleError", "load", "loads"]


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allowlist; nothing from it was run."""


def _numpy_reconstruct() -> Callable:
    try:  # numpy >= 2 moved the implementation; the old path still resolves but warns
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED: Dict[Tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str):
        # latin1 turns Python 2 ``str`` (what the original batches hold) into text byte for byte,
        # which is also what numpy needs to rebuild arrays pickled by Python 2.
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str):
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle global {module}.{name}; a CIFAR batch holds only "
                "dicts, lists, bytes and numpy arrays, so the file is corrupt or was tampered with")
        return resolve()

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refusing a persistent id in the pickle ({pid!r})")


def load(file: BinaryIO, source: str = "<pickle>") -> Any:
    """Unpickle plain data from ``file``; ``source`` names the file in error messages.

    Raises ``UnsafePickleError`` (a ``ValueError``) for a disallowed global and ``ValueError`` for
    a truncated or malformed stream.
    """
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError,
            UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


def loads(data: bytes, source: str = "<pickle>") -> Any:
    """``load`` from bytes."""
    return load(io.BytesIO(data), source)
