"""expandnets_cuda: train ExpandNets at the compact network's cost.

Importing this package never touches a GPU, a compiler or an optional dependency; backends are
loaded when first asked for (``available_backends()`` says which can run here and why not).

``nn``: the drop-in modules; ``convert``: whole-network expand / contract / plan / complexity /
+Init; ``compose``: the composition math; ``backends``: registry, availability, ``auto``;
``kernels``: the Triton and CUDA kernels' Python side; ``deploy``: export and quantization;
``models`` and ``train``: the paper's networks and their training.
"""
from expandnets_cuda import _reference_binding

_reference_binding.bind()  # before anything imports .reference: see _reference_binding.py

from expandnets_cuda.backends.auto import clear_cache as clear_auto_cache  # noqa: E402
from expandnets_cuda.backends.report import available_backends  # noqa: E402
from expandnets_cuda.backends.types import BackendInfo, BackendUnavailableError  # noqa: E402
from expandnets_cuda.convert.complexity import complexity, count_macs, count_params  # noqa: E402
from expandnets_cuda.convert.model import (ExpansionWarning, contract_model, expand_model,  # noqa: E402
                                           init_from_nonlinear, plan_expansion)
from expandnets_cuda.convert.plan import ExpansionPlan, LayerDecision  # noqa: E402
from expandnets_cuda.nn.conv import FusedExpandConv2d  # noqa: E402
from expandnets_cuda.nn.linear import FusedExpandLinear  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "FusedExpandConv2d", "FusedExpandLinear", "expand_model", "contract_model", "init_from_nonlinear",
    "complexity", "count_params", "count_macs", "available_backends", "BackendInfo",
    "BackendUnavailableError", "ExpansionWarning", "clear_auto_cache", "__version__",
    "plan_expansion", "ExpansionPlan", "LayerDecision",
]
