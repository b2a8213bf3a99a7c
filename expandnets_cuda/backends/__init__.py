"""Backends: what runs a fused unit's two stages (or its whole chain), which can run here, and
``auto``'s choice among them.

``types``: the records and the error (imports nothing of the package); ``registry``: the one
place that names backends, loading them lazily; ``report``: ``available_backends()``;
``triton_mode``: whether the Triton kernels run compiled or interpreted; ``auto``: the per-shape
measurement behind ``backend="auto"``. docs/backends.md says how to add one.
"""
from expandnets_cuda.backends.registry import register_chain, register_composer, register_convolver
from expandnets_cuda.backends.report import BackendReport, available_backends
from expandnets_cuda.backends.types import (BackendInfo, BackendUnavailableError, ChainRunner, Composer, Convolver,
                                            FusedPair)

__all__ = ["available_backends", "BackendReport", "BackendInfo", "BackendUnavailableError", "Composer",
           "Convolver", "ChainRunner", "FusedPair", "register_composer", "register_convolver", "register_chain"]
