"""The Triton composer: CL/FC/CK composition through the hand-written kernels."""
from __future__ import annotations

import os

import torch

from expandnets_cuda import composition
from expandnets_cuda.backends import BackendUnavailableError, Composer
from expandnets_cuda.triton_backend import ck_ops, ck_worklist_ops, cl_ops, cl_worklist_ops


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(t: torch.Tensor) -> None:
    if t.device.type != "cuda" and not interpreter_enabled():
        raise BackendUnavailableError(
            f"the Triton kernels need CUDA tensors (got {t.device}); on a CPU they run only under the "
            "Triton interpreter: set TRITON_INTERPRET=1 before importing expandnets_cuda (slow, for tests)")


def compose_cl(w1, b1, w2, b2, w3, b3, groups: int):
    check_device(w2)
    g = groups
    a, i = w1.shape[0] // g, w1.shape[1]
    c, _, kh, kw = w2.shape[0] // g, *w2.shape[1:]
    o = w3.shape[0] // g
    W1, W2, W3 = w1.reshape(g, a, i), w2.reshape(g, c, a, kh * kw), w3.reshape(g, o, c)
    weight = cl_ops.cl_compose(W1, W2, W3).reshape(g * o, i, kh, kw)
    if b1 is None:
        return weight, None
    bias = cl_ops.cl_bias_fold(W2, W3, b1.reshape(g, a), b2.reshape(g, c), b3.reshape(g, o)).reshape(g * o)
    return weight, bias


def compose_fc(weights, biases):
    """FC is CL with one group and one tap."""
    w1, w2, w3 = weights
    b1, b2, b3 = biases if biases is not None else (None, None, None)
    weight, bias = compose_cl(w1.reshape(*w1.shape, 1, 1), b1, w2.reshape(*w2.shape, 1, 1), b2,
                              w3.reshape(*w3.shape, 1, 1), b3, 1)
    return weight.reshape(w3.shape[0], w1.shape[1]), bias


def compose_ck(weights, biases):
    check_device(weights[0])
    # The lean Function: saves the weights only and recomputes partial kernels with the fold kernel.
    return composition.compose_ck(weights, biases, fold=ck_ops.ck_fold, fold_backward=ck_ops.ck_fold_backward)


def compose_cl_many(units):
    """Many CL/FC units of any shapes in a fixed number of launches (the work-list kernels)."""
    if units:
        check_device(units[0][2])
    return cl_worklist_ops.compose_cl_many(units)


def compose_ck_many(units):
    """Many CK units of any shapes and depths: launches per fold level, not per unit (the work-list folds)."""
    if units:
        check_device(units[0][0][0])
    return ck_worklist_ops.compose_ck_many(units)


def load_composer() -> Composer:
    return Composer("triton", compose_cl, compose_ck, compose_fc, device_types=("cuda",), cl_many=compose_cl_many,
                    ck_many=compose_ck_many)
