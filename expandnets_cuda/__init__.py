"""expandnets_cuda: train ExpandNets at the compact network's cost.

Importing this package never touches a GPU, a compiler or an optional dependency; backends are
loaded when first asked for (``available_backends()`` says which can run here and why not).
"""
from expandnets_cuda import _reference_binding

_reference_binding.bind()  # before anything imports .reference: see _reference_binding.py

from expandnets_cuda.autotune import clear_cache as clear_auto_cache
from expandnets_cuda.backends import BackendInfo, BackendUnavailableError, available_backends
from expandnets_cuda.complexity import complexity, count_macs, count_params
from expandnets_cuda.conversion import ExpansionWarning, contract_model, expand_model, init_from_nonlinear, plan_expansion
from expandnets_cuda.expansion_plan import ExpansionPlan, LayerDecision
from expandnets_cuda.fused_conv import FusedExpandConv2d
from expandnets_cuda.fused_linear import FusedExpandLinear

__version__ = "0.1.0"

__all__ = [
    "FusedExpandConv2d", "FusedExpandLinear", "expand_model", "contract_model", "init_from_nonlinear",
    "complexity", "count_params", "count_macs", "available_backends", "BackendInfo",
    "BackendUnavailableError", "ExpansionWarning", "clear_auto_cache", "__version__",
    "plan_expansion", "ExpansionPlan", "LayerDecision",
]
