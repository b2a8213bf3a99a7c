"""FC composition: ``W = W3 W2 W1``, ``b = W3 (W2 b1 + b2) + b3``, as CL with one group and one tap.

One definition for every composer: a backend passes its own ``cl``."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from expandnets_cuda.compose import Composed
from expandnets_cuda.compose.cl import compose_cl


def fc_through_cl(cl: Callable, weights: Sequence[torch.Tensor],
                  biases: Optional[Sequence[torch.Tensor]]) -> Composed:
    """The three Linear layers' ``(weights, biases)`` composed by ``cl`` (a composer's CL)."""
    w1, w2, w3 = weights
    b1, b2, b3 = biases if biases is not None else (None, None, None)
    weight, bias = cl(w1.reshape(*w1.shape, 1, 1), b1, w2.reshape(*w2.shape, 1, 1), b2,
                      w3.reshape(*w3.shape, 1, 1), b3, 1)
    return weight.reshape(w3.shape[0], w1.shape[1]), bias


def compose_fc(weights: Sequence[torch.Tensor], biases: Optional[Sequence[torch.Tensor]]) -> Composed:
    """The torch composer's FC (the cheaper product order, like CL's)."""
    return fc_through_cl(compose_cl, weights, biases)
