"""The CUDA composer: CL/FC/CK composition through the CUDA C++ kernels."""
from __future__ import annotations

import torch

from expandnets_cuda import composition
from expandnets_cuda.backends import BackendUnavailableError, Composer
from expandnets_cuda.cuda_backend import ck_worklist_ops, compose_ops, worklist_ops


def check_device(t: torch.Tensor) -> None:
    if t.device.type != "cuda":
        raise BackendUnavailableError(f"the CUDA kernels need CUDA tensors (got {t.device}); move the module "
                                      "to a GPU or pick another backend")


def compose_cl(w1, b1, w2, b2, w3, b3, groups: int):
    check_device(w2)
    g = groups
    a, i = w1.shape[0] // g, w1.shape[1]
    c, _, kh, kw = w2.shape[0] // g, *w2.shape[1:]
    o = w3.shape[0] // g
    W1 = w1.reshape(g, a, i).contiguous()
    W2 = w2.reshape(g, c, a, kh * kw).contiguous()
    W3 = w3.reshape(g, o, c).contiguous()
    weight = compose_ops.cl_compose(W1, W2, W3).reshape(g * o, i, kh, kw)
    if b1 is None:
        return weight, None
    biases = (b.reshape(g, -1).contiguous() for b in (b1, b2, b3))
    return weight, compose_ops.cl_bias_fold(W2, W3, *biases).reshape(g * o)


def compose_fc(weights, biases):
    """FC is CL with one group and one tap."""
    w1, w2, w3 = weights
    b1, b2, b3 = biases if biases is not None else (None, None, None)
    weight, bias = compose_cl(w1.reshape(*w1.shape, 1, 1), b1, w2.reshape(*w2.shape, 1, 1), b2,
                              w3.reshape(*w3.shape, 1, 1), b3, 1)
    return weight.reshape(w3.shape[0], w1.shape[1]), bias


def _fold(later, earlier):
    return compose_ops.ck_fold(later.contiguous(), earlier.contiguous())


def _fold_backward(grad, later, earlier):
    return compose_ops.ck_fold_backward(grad.contiguous(), later.contiguous(), earlier.contiguous())


def compose_ck(weights, biases):
    check_device(weights[0])
    # The lean Function: saves the weights only and recomputes partial kernels with the fold kernel.
    return composition.compose_ck(weights, biases, fold=_fold, fold_backward=_fold_backward)


def compose_cl_many(units):
    """Many CL/FC units of any shapes in a fixed number of launches (worklist_ops.py)."""
    units = list(units)
    if units:
        check_device(units[0][2])
    return worklist_ops.compose_cl_many(units)


def compose_ck_many(units):
    """Many CK units, one fold launch per level forward and two backward (ck_worklist_ops.py)."""
    units = list(units)
    if units:
        check_device(units[0][0][0])
    return ck_worklist_ops.compose_ck_many(units)


def load_composer() -> Composer:
    return Composer("cuda", compose_cl, compose_ck, compose_fc, device_types=("cuda",), cl_many=compose_cl_many,
                    ck_many=compose_ck_many)
