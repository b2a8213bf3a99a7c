"""The CL products as large GEMMs in the layout ``W2`` is stored in, so no product copies ``W2``
(the largest tensor of a unit, ``c*a*t``) when it does not have to.

Per group, ``W1 (a, i)``, ``W2 (c, a, t)`` (``t`` taps), ``W3 (o, c)``; composed ``W (o, i, t)``.
The intermediates of the forward and backward (docs/design.md section 3, ``cl_backward_plans``):
``R = W2 W1 (c, t, i)``, ``P = W3 W2``, ``Q = W3^T dW (c, t, i)``, ``Q' = dW W1^T`` (per tap).

Two layouts of ``W2``:

* ``TapsLast``: ``nn.Conv2d``'s own ``(c, a, t)``, contiguous. Products that run over ``a`` are
  one GEMM per output channel ``c`` (a batched GEMM, with ``W1`` broadcast by a stride-0 view, so
  nothing ``c``-fold is materialised); products over ``c`` are one GEMM over ``(a, t)``.
* ``TapsMajor``: rows ``(c, t)``, ``a`` contiguous, i.e. ``W2`` in channels-last memory format.
  Every product is then a single GEMM. It is free when the parameter is stored channels-last
  (``module.to(memory_format=torch.channels_last)``); for a contiguous ``W2`` it costs one copy,
  worth it below ``MIN_TAPS_PER_GEMM`` taps, where a per-channel GEMM has too few rows to run well.

Both give every tensor batched over groups ``g`` (leading dim). Measured on a 2-core AVX-512 CPU
at the SmallNet r=8 unit (c=512, a=256, i=32, o=64, t=49): each large product runs at ~270 GFLOP/s
either way, where 4-D ``matmul`` broadcasting (which copies ``W1`` per channel) and an odd-width
bias channel in the batched dimension ran 5-8x slower.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor

# Below this many taps, one GEMM per channel (rows = taps) runs badly; copying W2 to taps-major
# (one large GEMM) wins (measured on CPU, forward + backward).
MIN_TAPS_PER_GEMM = 16


# Elements of the per-channel products ``dW1`` sums at a time (taps-last): a 1 MB transient.
DW1_BLOCK_ELEMENTS = 1 << 18


def is_taps_major(w2: Tensor) -> bool:
    """``w2 (g, c, a, t)`` stored with ``a`` innermost (channels-last), so ``(g, c*t, a)`` is a view."""
    g, c, a, t = w2.shape
    return t == 1 or a == 1 or (w2.stride(2) == 1 and w2.stride(3) == a and w2.stride(1) == a * t)


def layout_for(w1: Tensor, w2: Tensor, w3: Tensor):
    """The products for ``w2 (g, c, a, t)``: taps-major where that is free or pays, else taps-last."""
    if is_taps_major(w2) or w2.shape[3] < MIN_TAPS_PER_GEMM or not w2.is_contiguous():
        return TapsMajor(w1, w2, w3)
    return TapsLast(w1, w2, w3)


def _per_channel(m: Tensor, n: int) -> Tensor:
    """``m (g, p, q)`` repeated for ``n`` channels of each group as ``(g*n, p, q)``; a stride-0 view
    for one group (a batched GEMM reads it without copying)."""
    g, p, q = m.shape
    if g == 1:
        return m.expand(n, p, q)
    return m.unsqueeze(1).expand(g, n, p, q).reshape(g * n, p, q)


class _Layout:
    def __init__(self, w1: Tensor, w2: Tensor, w3: Tensor):
        self.w1, self.w2, self.w3 = w1, w2, w3
        self.g, self.c, self.a, self.t = w2.shape
        self.i, self.o = w1.shape[2], w3.shape[1]

    @staticmethod
    def outer(rank_one) -> Tensor:
        """``u v^T (g, c, a)`` of ``rank_one = (u (g, c), v (g, a))`` (a broadcast product: a bmm
        with an inner dimension of one runs several times slower on CPU)."""
        u, v = rank_one
        return u.unsqueeze(2) * v.unsqueeze(1)

    def add_on_taps(self, d2: Tensor, rank_one) -> Tensor:
        """``d2 (g, c, a, t)`` (freshly made) plus ``u v^T`` on every tap, in place: one fused
        multiply-add with one tap (``addcmul_`` broadcast over taps is many times slower)."""
        if rank_one is None:
            return d2
        if self.t == 1:
            u, v = rank_one
            d2.squeeze(3).addcmul_(u.unsqueeze(2), v.unsqueeze(1))
            return d2
        return d2.add_(self.outer(rank_one).unsqueeze(3))

    def taps_inner(self, dw: Tensor) -> Tensor:
        """``dW (g, o, i, t)`` as ``(g, o, t, i)``, contiguous (a copy of the small composed grad)."""
        return dw.transpose(2, 3).contiguous()

    # Products shared by both layouts (they read W2 only through R or P).
    def weight_from_r(self, r: Tensor) -> Tensor:
        """``W = W3 R`` as ``(g, o, i, t)`` (a transposed view of one GEMM's result)."""
        g, o, t, i = self.g, self.o, self.t, self.i
        return torch.bmm(self.w3, r.reshape(g, self.c, t * i)).reshape(g, o, t, i).transpose(2, 3)

    def q(self, dw_ti: Tensor) -> Tensor:
        """``Q = W3^T dW`` as ``(g, c, t, i)``."""
        g, t, i = self.g, self.t, self.i
        return torch.bmm(self.w3.transpose(1, 2), dw_ti.reshape(g, self.o, t * i)).reshape(g, self.c, t, i)

    def dw3_from_r(self, dw_ti: Tensor, r: Tensor) -> Tensor:
        g, t, i = self.g, self.t, self.i
        return torch.bmm(dw_ti.reshape(g, self.o, t * i), r.reshape(g, self.c, t * i).transpose(1, 2))


class TapsMajor(_Layout):
    """``W2`` as rows ``(c, t)`` of ``a``: every product is one GEMM per group."""

    def __init__(self, w1, w2, w3):
        super().__init__(w1, w2, w3)
        g, c, a, t = w2.shape
        self.stored_taps_major = is_taps_major(w2)
        self.rows = w2.transpose(2, 3).reshape(g, c * t, a)  # a view if channels-last, else one copy

    def r(self) -> Tensor:
        return torch.bmm(self.rows, self.w1).reshape(self.g, self.c, self.t, self.i)

    def p(self) -> Tensor:
        """``P = W3 W2`` as ``(g, o, t, a)``."""
        g, c, a, t = self.g, self.c, self.a, self.t
        return torch.bmm(self.w3, self.rows.reshape(g, c, t * a)).reshape(g, self.o, t, a)

    def weight_from_p(self, p: Tensor) -> Tensor:
        g, o, t, i = self.g, self.o, self.t, self.i
        return torch.bmm(p.reshape(g, o * t, self.a), self.w1).reshape(g, o, t, i).transpose(2, 3)

    def qp(self, dw: Tensor, dw_ti: Tensor) -> Tensor:
        """``Q' = dW W1^T`` as ``(g, o, t, a)``."""
        g, o, t = self.g, self.o, self.t
        return torch.bmm(dw_ti.reshape(g, o * t, self.i), self.w1.transpose(1, 2)).reshape(g, o, t, self.a)

    def _as_w2(self, rows: Tensor) -> Tensor:
        """Rows ``(g, c*t, a)`` back as ``(g, c, a, t)`` in ``W2``'s own layout: a view when it is
        stored channels-last, else one copy here (not one per parameter of a network-composed
        group, which is what each AccumulateGrad would do with a strided slice)."""
        w2 = rows.reshape(self.g, self.c, self.t, self.a).transpose(2, 3)
        return w2 if self.stored_taps_major else w2.contiguous()

    def dw2_from_q(self, q: Tensor, rank_one=None) -> Tensor:
        g, c, t = self.g, self.c, self.t
        return self.add_on_taps(self._as_w2(torch.bmm(q.reshape(g, c * t, self.i), self.w1.transpose(1, 2))), rank_one)

    def dw2_from_qp(self, qp: Tensor, rank_one=None) -> Tensor:
        g, c, t, a = self.g, self.c, self.t, self.a
        d2 = torch.bmm(self.w3.transpose(1, 2), qp.reshape(g, self.o, t * a)).reshape(g, c * t, a)
        return self.add_on_taps(self._as_w2(d2), rank_one)

    def dw1_from_q(self, q: Tensor) -> Tensor:
        return torch.bmm(self.rows.transpose(1, 2), q.reshape(self.g, self.c * self.t, self.i))

    def dw1_from_p(self, p: Tensor, dw: Tensor, dw_ti: Tensor) -> Tensor:
        g, o, t = self.g, self.o, self.t
        return torch.bmm(p.reshape(g, o * t, self.a).transpose(1, 2), dw_ti.reshape(g, o * t, self.i))

    def dw3_from_qp(self, qp: Tensor) -> Tensor:
        g, c, t, a = self.g, self.c, self.t, self.a
        return torch.bmm(qp.reshape(g, self.o, t * a), self.rows.reshape(g, c, t * a).transpose(1, 2))


class TapsLast(_Layout):
    """``W2 (c, a, t)`` contiguous: products over ``a`` batch one GEMM per channel."""

    def __init__(self, w1, w2, w3):
        super().__init__(w1, w2, w3)
        g, c, a, t = w2.shape
        self.per_channel = w2.reshape(g * c, a, t)

    def r(self) -> Tensor:
        r = torch.bmm(self.per_channel.transpose(1, 2), _per_channel(self.w1, self.c))  # (g*c, t, i)
        return r.reshape(self.g, self.c, self.t, self.i)

    def p(self) -> Tensor:
        """``P = W3 W2`` as ``(g, o, a, t)``."""
        g, c, a, t = self.g, self.c, self.a, self.t
        return torch.bmm(self.w3, self.w2.reshape(g, c, a * t)).reshape(g, self.o, a, t)

    def weight_from_p(self, p: Tensor) -> Tensor:
        g, o, a, t, i = self.g, self.o, self.a, self.t, self.i
        w1t = _per_channel(self.w1.transpose(1, 2), o)  # (g*o, i, a)
        return torch.bmm(w1t, p.reshape(g * o, a, t)).reshape(g, o, i, t)

    def qp(self, dw: Tensor, dw_ti: Tensor) -> Tensor:
        """``Q' = dW W1^T`` as ``(g, o, a, t)``."""
        g, o, a, t, i = self.g, self.o, self.a, self.t, self.i
        return torch.bmm(_per_channel(self.w1, o), dw.contiguous().reshape(g * o, i, t)).reshape(g, o, a, t)

    def dw2_from_q(self, q: Tensor, rank_one=None) -> Tensor:
        g, c, a, t, i = self.g, self.c, self.a, self.t, self.i
        w1s, qs = _per_channel(self.w1, c), q.reshape(g * c, t, i).transpose(1, 2)
        if rank_one is None:
            return torch.bmm(w1s, qs).reshape(g, c, a, t)  # (g*c, a, t)
        # The rank-one term as the GEMM's accumulator, broadcast over the taps.
        return torch.baddbmm(self.outer(rank_one).reshape(g * c, a, 1), w1s, qs).reshape(g, c, a, t)

    def dw2_from_qp(self, qp: Tensor, rank_one=None) -> Tensor:
        g, c, a, t = self.g, self.c, self.a, self.t
        d2 = torch.bmm(self.w3.transpose(1, 2), qp.reshape(g, self.o, a * t)).reshape(g, c, a, t)
        return self.add_on_taps(d2, rank_one)

    def dw1_from_q(self, q: Tensor) -> Tensor:
        """``sum_c W2[c] Q[c]``: on a CPU batched over blocks of channels, so the per-channel
        products in flight stay near ``DW1_BLOCK_ELEMENTS`` (a ``c*a*i`` transient would be
        freshly allocated, i.e. page-faulted, and re-read every step)."""
        g, c, a, t, i = self.g, self.c, self.a, self.t, self.i
        w2, q = self.per_channel.reshape(g, c, a, t), q.reshape(g, c, t, i)
        block = c  # elsewhere one batched GEMM (one launch) is what counts
        if w2.device.type == "cpu":
            block = max(1, min(c, DW1_BLOCK_ELEMENTS // max(1, g * a * i)))
        total = None
        for c0 in range(0, c, block):
            part = torch.bmm(w2[:, c0:c0 + block].reshape(-1, a, t), q[:, c0:c0 + block].reshape(-1, t, i))
            part = part.reshape(g, -1, a, i).sum(dim=1)
            total = part if total is None else total.add_(part)
        return total

    def dw1_from_p(self, p: Tensor, dw: Tensor, dw_ti: Tensor) -> Tensor:
        g, o, a, t, i = self.g, self.o, self.a, self.t, self.i
        d = torch.bmm(p.reshape(g * o, a, t), dw_ti.reshape(g * o, t, i))  # (g*o, a, i)
        return d.reshape(g, o, a, i).sum(dim=1)

    def dw3_from_qp(self, qp: Tensor) -> Tensor:
        g, c, a, t = self.g, self.c, self.a, self.t
        return torch.bmm(qp.reshape(g, self.o, a * t), self.w2.reshape(g, c, a * t).transpose(1, 2))
