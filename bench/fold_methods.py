"""Ways to fold two stacked kernels (CK's inner product), timed and checked against float64.

    python -m bench.fold_methods --threads 2        # SmallNet k=7's CK folds at r = 2, 4, 8

A fold ``K[o, i, v+u] = sum_c later[o,c,v] earlier[c,i,u]`` is a full 2-D convolution over the taps
with a matrix product over ``c``. Its forward and backward are timed interleaved, four ways:

* ``library``: what ``compose/products.py`` runs (forward one oneDNN convolution, backward the
  window gather and two GEMMs);
* ``peer``: the online collapse's (bench/peers.py): a convolution forward, autograd's
  convolution backward;
* ``toom-cook``: evaluate both kernels at ``(a+b-1)^2`` points (0, +-1, +-2, 1/2, infinity per
  axis), multiply pointwise over ``c`` (one batched GEMM: 49 products per channel triple for a
  5x5 after a 3x3 instead of 225), interpolate back; backward by the transposed maps;
* ``fft``: the same with the real FFT (28 complex points for 7x7).

Each method's largest error relative to the float64 fold is printed beside its time: a method
with fewer multiply-adds must also keep float32's accuracy to replace the library's.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Callable, Dict, List, Tuple

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    __package__ = "bench"

from expandnets_cuda.compose import products  # noqa: E402
from expandnets_cuda.timing import interleaved  # noqa: E402

from . import peers  # noqa: E402

Tensor = torch.Tensor
# (later out, later in, earlier in, earlier kernel): every CK fold of SmallNet k=7 at r = 2, 4, 8
# whose multiply-adds matter (the two folds of its last two units), each a 3x3 after a 3x3 or a
# 3x3 after the 5x5 partial.
SMALLNET7_FOLDS = {2: [(128, 64, 32, 3), (64, 128, 32, 5)], 4: [(256, 128, 32, 3), (64, 256, 32, 5)],
                   8: [(512, 256, 32, 3), (64, 512, 32, 5)]}
METHODS = ("library", "peer", "toom-cook", "fft")
_POINTS = {5: [0.0, 1.0, -1.0, 2.0, None], 7: [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, None]}  # None: infinity


def _vandermonde(points, taps: int) -> Tensor:
    rows = [[0.0] * (taps - 1) + [1.0] if p is None else [p ** j for j in range(taps)] for p in points]
    return torch.tensor(rows, dtype=torch.float64)


def toom_cook_maps(a: int, b: int, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """2-D evaluation maps of an ``a x a`` and a ``b x b`` kernel and the interpolation map of their
    ``(a+b-1)^2`` products (Kronecker products of the 1-D Vandermonde matrices)."""
    points = _POINTS[a + b - 1]
    va, vb, vn = _vandermonde(points, a), _vandermonde(points, b), _vandermonde(points, a + b - 1)
    inverse = torch.linalg.inv(vn)
    return (torch.kron(va, va).to(dtype), torch.kron(vb, vb).to(dtype), torch.kron(inverse, inverse).to(dtype))


def _evaluated(later: Tensor, earlier: Tensor, maps):
    """Both kernels at the ``(a+b-1)^2`` points: ``(points, o, c)`` and ``(points, c, i)``."""
    (o, c, a, _), (_, i, b, _) = later.shape, earlier.shape
    ta, tb, _ = maps
    n = (a + b - 1) ** 2
    return (ta @ later.reshape(o * c, a * a).t()).view(n, o, c), (tb @ earlier.reshape(c * i, b * b).t()).view(n, c, i)


def toom_cook_fold(later: Tensor, earlier: Tensor, maps) -> Tensor:
    (o, _, a, _), (_, i, b, _) = later.shape, earlier.shape
    lh, eh = _evaluated(later, earlier, maps)
    return (torch.bmm(lh, eh).view(-1, o * i).t() @ maps[2].t()).view(o, i, a + b - 1, a + b - 1)


def toom_cook_fold_backward(later: Tensor, earlier: Tensor, dk: Tensor, maps):
    (o, c, a, _), (_, i, b, _) = later.shape, earlier.shape
    ta, tb, interp = maps
    n = (a + b - 1) ** 2
    lh, eh = _evaluated(later, earlier, maps)
    dz = (interp.t() @ dk.reshape(o * i, n).t()).view(n, o, i)
    d_later = (torch.bmm(dz, eh.transpose(1, 2)).view(n, o * c).t() @ ta).view(o, c, a, a)
    d_earlier = (torch.bmm(lh.transpose(1, 2), dz).view(n, c * i).t() @ tb).view(c, i, b, b)
    return d_later, d_earlier


def _spectra(later: Tensor, earlier: Tensor, n: int):
    (o, c), i = later.shape[:2], earlier.shape[1]
    lh = torch.fft.rfft2(later, s=(n, n)).permute(2, 3, 0, 1).reshape(-1, o, c)
    eh = torch.fft.rfft2(earlier, s=(n, n)).permute(2, 3, 0, 1).reshape(-1, c, i)
    return lh, eh


def fft_fold(later: Tensor, earlier: Tensor) -> Tensor:
    (o, _, a, _), (_, i, b, _) = later.shape, earlier.shape
    n = a + b - 1
    lh, eh = _spectra(later, earlier, n)
    product = torch.bmm(lh, eh).reshape(n, n // 2 + 1, o, i).permute(2, 3, 0, 1)
    return torch.fft.irfft2(product, s=(n, n))


def fft_fold_backward(later: Tensor, earlier: Tensor, dk: Tensor):
    """The correlations of the backward as convolutions with the flipped ``dk``, cropped."""
    (o, c, a, _), (_, i, b, _) = later.shape, earlier.shape
    n = a + b - 1
    lh, eh = _spectra(later, earlier, n)
    dh = torch.fft.rfft2(dk.flip(2, 3), s=(n, n)).permute(2, 3, 0, 1).reshape(-1, o, i)
    d_later = torch.bmm(dh, eh.transpose(1, 2)).reshape(n, n // 2 + 1, o, c).permute(2, 3, 0, 1)
    d_earlier = torch.bmm(lh.transpose(1, 2), dh).reshape(n, n // 2 + 1, c, i).permute(2, 3, 0, 1)
    return (torch.fft.irfft2(d_later, s=(n, n)).flip(2, 3)[:, :, :a, :a],
            torch.fft.irfft2(d_earlier, s=(n, n)).flip(2, 3)[:, :, :b, :b])


def _methods(later: Tensor, earlier: Tensor, dk: Tensor) -> Dict[str, Tuple[Callable, Callable]]:
    """Per method: ``forward() -> K`` and ``backward() -> (d later, d earlier)``."""
    maps = toom_cook_maps(later.shape[-1], earlier.shape[-1], later.dtype)
    # As the library's backward holds them: weights copied taps-major once, a partial as folded.
    later_cl = later.contiguous(memory_format=torch.channels_last)
    earlier_as_held = earlier.contiguous(memory_format=torch.channels_last) if earlier.shape[-1] == 3 else earlier

    lat, ear = later.detach().requires_grad_(), earlier.detach().requires_grad_()
    folded = peers.fold(lat, ear)  # the graph is built once: its backward alone is timed

    def peer_backward():
        return torch.autograd.grad(folded, (lat, ear), dk, retain_graph=True)

    return {"library": (lambda: products.fold_forward(later, earlier),
                        lambda: products.fold_backward(later_cl, earlier_as_held, dk)),
            "peer": (lambda: peers.fold(later, earlier), peer_backward),
            "toom-cook": (lambda: toom_cook_fold(later, earlier, maps),
                          lambda: toom_cook_fold_backward(later, earlier, dk, maps)),
            "fft": (lambda: fft_fold(later, earlier), lambda: fft_fold_backward(later, earlier, dk))}


def _relative_error(got, want) -> float:
    got, want = (got,) if isinstance(got, Tensor) else got, (want,) if isinstance(want, Tensor) else want
    return max(float((g.double() - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


def bench_fold(o: int, c: int, i: int, b: int, min_run_time: float = 0.3, rounds: int = 7) -> List[dict]:
    """One row per method for ``later (o, c, 3, 3)`` after ``earlier (c, i, b, b)``: forward and
    backward medians (ms, interleaved) and the largest error relative to float64."""
    generator = torch.Generator().manual_seed(0)
    later64 = torch.randn(o, c, 3, 3, generator=generator, dtype=torch.float64) / (9 * c) ** 0.5
    earlier64 = torch.randn(c, i, b, b, generator=generator, dtype=torch.float64) / (b * b * i) ** 0.5
    dk64 = torch.randn(o, i, b + 2, b + 2, generator=generator, dtype=torch.float64)
    exact = _methods(later64, earlier64, dk64)["library"]
    want_forward, want_backward = exact[0](), exact[1]()
    methods = _methods(later64.float(), earlier64.float(), dk64.float())
    fns = {f"{name} {phase}": fn for name, pair in methods.items() for phase, fn in zip(("forward", "backward"), pair)}
    timings = interleaved(fns, "cpu", min_run_time=min_run_time, rounds=rounds)
    return [{"fold": f"({o},{c},3,3) after ({c},{i},{b},{b})", "method": name,
             "forward_ms": timings[f"{name} forward"].median * 1e3,
             "backward_ms": timings[f"{name} backward"].median * 1e3,
             "error": max(_relative_error(forward(), want_forward), _relative_error(backward(), want_backward))}
            for name, (forward, backward) in methods.items()]


def main(argv=None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="2,4,8")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-run-time", type=float, default=0.3)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"CK folds of SmallNet k=7, float32 on the CPU ({torch.get_num_threads()} threads), medians of "
          f"{args.rounds} interleaved rounds; error: largest |difference| / largest |value| against float64")
    print(f"{'r':>2} {'fold':<34} {'method':<10} {'fwd ms':>8} {'bwd ms':>8} {'error':>8}")
    for rate in (int(r) for r in args.rates.split(",")):
        for shape in SMALLNET7_FOLDS[rate]:
            for row in bench_fold(*shape, min_run_time=args.min_run_time, rounds=args.rounds):
                rows.append({"rate": rate, **row})
                print(f"{rate:>2} {row['fold']:<34} {row['method']:<10} {row['forward_ms']:8.3f} "
                      f"{row['backward_ms']:8.3f} {row['error']:8.1e}")
    return rows


if __name__ == "__main__":
    main()
