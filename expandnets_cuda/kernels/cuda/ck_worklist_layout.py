"""How the CK work list (``expandnets::cuda_ck_network_fold`` and its backward, csrc/expandnets/ck_worklist.h)
lays out the folds of one level: every result kind (K; d later, d earlier) is one flat buffer with
the folds' slices back to back in fold order (the offsets ``ck_worklist_plan`` assigns). Pure torch
and no extension: the fake implementations and ``folds_network_of``, which makes a ``ck_network.NetworkFolds``
out of the two ops, are built from it and run anywhere (tests/kernels/cuda/test_cuda_ck_worklist.py checks them
on the CPU with torch stand-ins for the kernels behind the same schemas)."""
from __future__ import annotations

import math
from typing import Callable, List, Sequence, Tuple

import torch

from expandnets_cuda.compose import ck_network

Tensor = torch.Tensor


def folded_shape(later: Tensor, earlier: Tensor) -> Tuple[int, int, int, int]:
    """K of ``fold(later (O, C, a, a2), earlier (C, I, b, b2))``: ``(O, I, a + b - 1, a2 + b2 - 1)``."""
    return (int(later.shape[0]), int(earlier.shape[1]), int(later.shape[2] + earlier.shape[2] - 1),
            int(later.shape[3] + earlier.shape[3] - 1))


def network_fold_fake(laters: Sequence[Tensor], earliers: Sequence[Tensor]) -> Tensor:
    """The shape of ``cuda_ck_network_fold``'s result: every fold's K, flat, back to back."""
    return laters[0].new_empty((sum(math.prod(folded_shape(l, e)) for l, e in zip(laters, earliers)),))


def network_fold_backward_fake(grads: Sequence[Tensor], laters: Sequence[Tensor], earliers: Sequence[Tensor]):
    """The shapes of ``cuda_ck_network_fold_backward``'s results: flat d later, flat d earlier."""
    return (laters[0].new_empty((sum(t.numel() for t in laters),)),
            laters[0].new_empty((sum(t.numel() for t in earliers),)))


def split(flat: Tensor, shapes: Sequence[Tuple[int, ...]]) -> List[Tensor]:
    """Views of ``flat`` of each of ``shapes`` in turn (the folds' slices back to back)."""
    return [chunk.view(shape) for chunk, shape in zip(flat.split([math.prod(s) for s in shapes]), shapes)]


def folds_network_of(network_fold: Callable, network_fold_backward: Callable) -> ck_network.NetworkFolds:
    """The ``NetworkFolds`` of the two ops (``network_fold(laters, earliers) -> flat K``,
    ``network_fold_backward(grads, laters, earliers) -> (flat d later, flat d earlier)``): contiguous
    operands in, per-fold views of the flat results out."""
    def forward(pairs):
        laters = [later.contiguous() for later, _ in pairs]
        earliers = [earlier.contiguous() for _, earlier in pairs]
        return split(network_fold(laters, earliers), [folded_shape(l, e) for l, e in zip(laters, earliers)])

    def backward(pairs, dks):
        laters = [later.contiguous() for later, _ in pairs]
        earliers = [earlier.contiguous() for _, earlier in pairs]
        d_later, d_earlier = network_fold_backward([dk.contiguous() for dk in dks], laters, earliers)
        return list(zip(split(d_later, [t.shape for t in laters]), split(d_earlier, [t.shape for t in earliers])))

    return ck_network.NetworkFolds(forward, backward)
