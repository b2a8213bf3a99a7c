"""How the work-list composition (``expandnets::cuda_cl_network``, csrc/expandnets/worklist.h) lays out
many CL/FC units: each unit's tensors in the kernels' canonical shapes, and every result kind as one
flat buffer with the units' slices back to back in unit order (the offsets ``cl_worklist_plan``
assigns). Pure torch and no extension: the fake implementations, the autograd and the per-unit
views are built from it, and it runs anywhere (tests/kernels/cuda/test_cuda_worklist.py checks it on the CPU
with a torch stand-in for the kernels behind the same schema)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch

from expandnets_cuda.compose.cl import ClOperands, cl_operands


def canonical_unit(w1, b1, w2, b2, w3, b3, groups: int) -> ClOperands:
    """``cl``'s arguments in the kernels' shapes (``compose.cl.cl_operands``), contiguous: views
    where the tensors are contiguous, so their pointers stay."""
    return cl_operands(w1, b1, w2, b2, w3, b3, groups, contiguous=True)


def weight_numel(w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor):
    """Length of one unit's slice of the composed weights, G * O * I * T."""
    return w1.shape[0] * w3.shape[1] * w1.shape[2] * w2.shape[3]


def network_fake(w1s, w2s, w3s, b1s, b2s, b3s):
    """Shapes of ``cuda_cl_network``'s results: the flat weights and the flat biases (empty without)."""
    like = w2s[0]
    weights = like.new_empty((sum(weight_numel(*u) for u in zip(w1s, w2s, w3s)),))
    bias = like.new_empty((sum(b.numel() for b in b3s),))
    return weights, bias


def network_backward_fake(grad_w, grad_bias, w1s, w2s, w3s, b1s, b2s, b3s):
    """Shapes of ``cuda_cl_network_backward``'s results: flat dw1, dw2, dw3, db1, db2."""
    def flat(tensors):
        return grad_w.new_empty((sum(t.numel() for t in tensors),))
    return flat(w1s), flat(w2s), flat(w3s), flat(b1s), flat(b2s)


def split_like(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Views of ``flat`` shaped like each of ``tensors`` in turn (their slices back to back)."""
    if not tensors:
        return []
    pieces = flat.split([t.numel() for t in tensors])
    return [piece.view(t.shape) for piece, t in zip(pieces, tensors)]


def autograd_of(network_backward: Callable):
    """``(setup_context, backward)`` for ``torch.library.register_autograd`` of the network-composition op, with
    ``network_backward(grad_w, grad_bias, w1s, ..., b3s) -> flat (dw1, dw2, dw3, db1, db2)``: saves only
    the inputs; every input's gradient is a view of one flat buffer (db3 is grad_bias itself)."""
    def setup_context(ctx, inputs, output):
        w1s, w2s, w3s, b1s, b2s, b3s = inputs
        ctx.units, ctx.biases = len(w2s), len(b1s) > 0
        ctx.save_for_backward(*w1s, *w2s, *w3s, *b1s, *b2s, *b3s)

    def backward(ctx, grad_w, grad_bias):
        n, saved = ctx.units, ctx.saved_tensors
        w1s, w2s, w3s = (list(saved[k * n:(k + 1) * n]) for k in range(3))
        b1s, b2s, b3s = (list(saved[k * n:(k + 1) * n]) for k in range(3, 6)) if ctx.biases else ([], [], [])
        grad_bias = grad_bias.contiguous() if ctx.biases else grad_w.new_empty((0,))
        dw1, dw2, dw3, db1, db2 = network_backward(grad_w.contiguous(), grad_bias, w1s, w2s, w3s, b1s, b2s, b3s)
        return (split_like(dw1, w1s), split_like(dw2, w2s), split_like(dw3, w3s), split_like(db1, b1s),
                split_like(db2, b2s), split_like(grad_bias, b3s))

    return setup_context, backward


def compose_units(units, network_op: Callable) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``Composer.cl_network`` over ``network_op(w1s, w2s, w3s, b1s, b2s, b3s) -> (flat W, flat bias)`` (the
    op, differentiable): ``units`` as ``cl``'s argument tuples, all with biases or all without; the
    list of ``(W_eff, b_eff or None)``, views of the op's two flat results."""
    canon = [canonical_unit(*unit) for unit in units]
    if not canon:
        return []
    biases = canon[0].b1 is not None
    if any((u.b1 is not None) != biases for u in canon):
        raise ValueError("cl_network: the units must all have biases or all have none")
    lists = [[getattr(u, name) for u in canon] for name in ("w1", "w2", "w3")]
    lists += [[getattr(u, name) for u in canon] if biases else [] for name in ("b1", "b2", "b3")]
    flat_w, flat_b = network_op(*lists)
    weights = flat_w.split([weight_numel(u.w1, u.w2, u.w3) for u in canon])
    out_biases = flat_b.split([u.b3.numel() for u in canon]) if biases else [None] * len(canon)
    return [(w.view(u.weight_shape), b) for w, b, u in zip(weights, out_biases, canon)]
