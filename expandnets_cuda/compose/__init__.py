"""The composition math in plain PyTorch (the ``torch`` composer), each with its own backward.

``cl``, ``ck`` and ``fc`` turn a unit's expanded parameters into the compact ``(W_eff, b_eff)``;
``products`` holds the products they are made of, with the one cost model that picks their order;
``cl_gemms`` the CL products as large GEMMs; ``ck_network`` composes many CK units per fold level.

Each composer is an autograd Function that saves the expanded parameters (which exist anyway)
and, in backward, recomputes the weight-sized products it needs, choosing the multiplication
order by cost in both directions. The exceptions are small: a CK unit keeps its partial kernels
when they are small (``products.ck_keeps_partials``), a CL/FC unit the product its forward formed
first when small (``products.cl_kept_intermediate``), and the biases' tap sums and vectors. So
what the composition keeps between forward and backward is weight-sized at most, never
batch-sized (docs/design.md section 3). The backwards are differentiable torch ops (a double
backward forms every kept tensor again, with its graph), so double backward works.
Nothing here imports a backend or a kernel.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

Composed = Tuple[torch.Tensor, Optional[torch.Tensor]]
