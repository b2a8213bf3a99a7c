"""Fake implementations of the CK work-list ops of ``expandnets_cuda._C``
(``expandnets::cuda_ck_network_fold`` and ``cuda_ck_network_fold_backward``: csrc/expandnets/ck_worklist.h),
``CUDA_NETWORK_FOLDS``, their ``ck_network.NetworkFolds``, and ``compose_ck_network``, the CUDA composer's
``ck_network``: all CK units of a network compose with one launch per fold level forward and two per
level backward, whatever the number of units.

The ops have no autograd formula of their own: ``ck_network._ComposeCKNetwork`` calls the backward op
(so no double backward). The binding builds each fold level's device table once per set of operand
pointers and shapes and reuses it: the parameters keep their addresses and the caching allocator
hands the partial kernels and gradients the same blocks step after step, so a warmed-up step makes
no host-to-device copy (and a CUDA-graph capture never has to; it refuses to build a table)."""
from __future__ import annotations

import torch

from expandnets_cuda import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)
from expandnets_cuda.compose import ck_network
from expandnets_cuda.kernels.cuda import ck_worklist_layout

ck_network_fold = torch.ops.expandnets.cuda_ck_network_fold
ck_network_fold_backward = torch.ops.expandnets.cuda_ck_network_fold_backward

torch.library.register_fake("expandnets::cuda_ck_network_fold")(ck_worklist_layout.network_fold_fake)
torch.library.register_fake("expandnets::cuda_ck_network_fold_backward")(ck_worklist_layout.network_fold_backward_fake)

CUDA_NETWORK_FOLDS = ck_worklist_layout.folds_network_of(ck_network_fold, ck_network_fold_backward)


def compose_ck_network(units):
    """``ck_network``: ``units`` a sequence of ``(weights, biases or None)`` on one CUDA device -> each
    unit's ``(K, b or None)`` (``ck_network.compose_ck_network`` with the work-list folds)."""
    return ck_network.compose_ck_network(units, CUDA_NETWORK_FOLDS)
