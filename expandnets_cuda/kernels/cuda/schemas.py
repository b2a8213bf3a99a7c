"""The contract between ``csrc/binding/`` and this package: every op ``expandnets_cuda._C``
must define, with the schema the Python side calls it by.

A library built from other sources (an old build left in place, a wheel of another version)
would otherwise fail deep inside a training step, or run with arguments in the wrong places;
``mismatches()`` finds that when the backend loads, and the backend then refuses with the fix.
"""
from __future__ import annotations

from typing import Dict, List

import torch

NAMESPACE = "expandnets"
PREFIX = "cuda_"

_CHAIN_ARGS = "Tensor? b1, Tensor w2, Tensor? b2, Tensor? w3, Tensor? b3, int[] pads, int[] dilation1, " \
              "int[] stride, int[] dilation, int groups, bool relu, bool exact"
_CL_NETWORK_LISTS = "Tensor[] w1, Tensor[] w2, Tensor[] w3, Tensor[] b1, Tensor[] b2, Tensor[] b3"

SCHEMAS: Dict[str, str] = {
    "cuda_cl_compose": "(Tensor w1, Tensor w2, Tensor w3) -> Tensor",
    "cuda_cl_compose_backward": "(Tensor grad, Tensor w1, Tensor w2, Tensor w3) -> (Tensor, Tensor, Tensor)",
    "cuda_cl_bias_fold": "(Tensor w2, Tensor w3, Tensor b1, Tensor b2, Tensor b3) -> Tensor",
    "cuda_ck_fold": "(Tensor later, Tensor earlier) -> Tensor",
    "cuda_ck_fold_backward": "(Tensor grad, Tensor later, Tensor earlier) -> (Tensor, Tensor)",
    "cuda_ck_network_fold": "(Tensor[] later, Tensor[] earlier) -> Tensor",
    "cuda_ck_network_fold_backward": "(Tensor[] grad, Tensor[] later, Tensor[] earlier) -> (Tensor, Tensor)",
    "cuda_cl_network": f"({_CL_NETWORK_LISTS}) -> (Tensor, Tensor)",
    "cuda_cl_network_backward": f"(Tensor grad_w, Tensor grad_bias, {_CL_NETWORK_LISTS}) "
                             "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    "cuda_conv2d": "(Tensor x, Tensor w, Tensor? b, int[] stride, int[] padding, int[] dilation, int groups, "
                   "bool exact) -> Tensor",
    "cuda_conv2d_backward": "(Tensor grad, Tensor x, Tensor w, bool has_bias, int[] stride, int[] padding, "
                            "int[] dilation, int groups, bool exact) -> (Tensor, Tensor, Tensor)",
    "cuda_chain": f"(Tensor x, Tensor w1, {_CHAIN_ARGS}) -> Tensor",
    "cuda_chain_backward": f"(Tensor grad, Tensor x, Tensor w1, {_CHAIN_ARGS}) "
                           "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
}

# The ops this package gives an autograd formula (torch.library.register_autograd). The others run
# inside one of those formulas, or inside an autograd Function (the CK work-list folds: compose/ck_network.py).
DIFFERENTIABLE = frozenset({"cuda_cl_compose", "cuda_cl_bias_fold", "cuda_ck_fold", "cuda_cl_network", "cuda_conv2d",
                            "cuda_chain"})


def registered() -> Dict[str, str]:
    """The ``cuda_*`` ops the loaded library defines: name -> schema (without the namespace)."""
    found = {}
    for qualified in torch._C._dispatch_get_all_op_names():
        namespace, _, name = qualified.partition("::")
        if namespace == NAMESPACE and name.startswith(PREFIX) and "." not in name:
            schema = str(getattr(getattr(torch.ops, NAMESPACE), name).default._schema)
            found[name] = schema.split("::", 1)[1][len(name):]
    return found


def mismatches() -> List[str]:
    """How the loaded library differs from ``SCHEMAS``: one line per missing op, other schema or
    op that nothing here calls. Empty when they agree."""
    found = registered()
    problems = [f"{name} is missing" for name in SCHEMAS if name not in found]
    problems += [f"{name}{found[name]} where this package calls {name}{schema}"
                 for name, schema in SCHEMAS.items() if name in found and found[name] != schema]
    problems += [f"{name}{found[name]} is defined but nothing here calls it" for name in found if name not in SCHEMAS]
    return problems
