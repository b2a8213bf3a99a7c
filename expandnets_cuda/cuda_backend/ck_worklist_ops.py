"""Fake implementations of the CK work-list ops of ``expandnets_cuda._C``
(``expandnets::cuda_ck_many_fold`` and ``cuda_ck_many_fold_backward``: csrc/expandnets/ck_worklist.h),
``CUDA_FOLDS_MANY``, their ``ck_many.FoldsMany``, and ``compose_ck_many``, the CUDA composer's
``ck_many``: all CK units of a network compose with one launch per fold level forward and two per
level backward, whatever the number of units.

The ops have no autograd formula of their own: ``ck_many._ComposeCKMany`` calls the backward op
(so no double backward). The binding builds each fold level's device table once per set of operand
pointers and shapes and reuses it: the parameters keep their addresses and the caching allocator
hands the partial kernels and gradients the same blocks step after step, so a warmed-up step makes
no host-to-device copy (and a CUDA-graph capture never has to; it refuses to build a table)."""
from __future__ import annotations

import torch

from expandnets_cuda import _C  # noqa: F401  (loading the extension defines the expandnets::cuda_* ops)
from expandnets_cuda import ck_many
from expandnets_cuda.cuda_backend import ck_worklist_layout

ck_many_fold = torch.ops.expandnets.cuda_ck_many_fold
ck_many_fold_backward = torch.ops.expandnets.cuda_ck_many_fold_backward

torch.library.register_fake("expandnets::cuda_ck_many_fold")(ck_worklist_layout.many_fold_fake)
torch.library.register_fake("expandnets::cuda_ck_many_fold_backward")(ck_worklist_layout.many_fold_backward_fake)

CUDA_FOLDS_MANY = ck_worklist_layout.folds_many_of(ck_many_fold, ck_many_fold_backward)


def compose_ck_many(units):
    """``ck_many``: ``units`` a sequence of ``(weights, biases or None)`` on one CUDA device -> each
    unit's ``(K, b or None)`` (``ck_many.compose_ck_many`` with the work-list folds)."""
    return ck_many.compose_ck_many(units, CUDA_FOLDS_MANY)
