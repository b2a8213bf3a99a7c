"""Scaling benchmark: how the fused ExpandNet's training step compares with the compact network's
as the work per step grows (batch, image size, the paper's ImageNet networks at 224 px).

Per point, four models are timed in one round-robin (bench/network.py's ``Variant.step``: zero_grad,
forward, cross-entropy, backward, SGD): ``compact``, ``fused`` (this library, ``backend="auto"``),
``unfused`` (``backend="reference"``, the paper's training form) and ``collapse`` (the eager online
collapse peer, bench/peers.py). A row holds their step times and images/s, the time ratios to
compact (> 1 = slower) and the roofline floor of the fused model's added work (bench/roofline.py):
``floor_vs_compact = (compact_ms + floor_ms) / compact_ms``, the best the fused step could be.

Points are ``model:form:batch:px``: SmallNet k=7 (CL, CK at r=4, built for its input size) and the
paper's ImageNet presets (``mobilenet_v1``, ``mobilenet_v2``, ``shufflenet_v2_x0_5``; CL at r=4,
1000 classes, 224 px).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from expandnets_cuda.models import PAPER_PRESETS
from expandnets_cuda.timing import interleaved

from . import roofline
from .network import Variant, build
from .peers import build_peer

SMALLNET = "smallnet7"
SMALLNET_FORMS = ("cl", "ck")
SMALLNET_RATE = 4.0
IMAGENET = ("mobilenet_v1", "mobilenet_v2", "shufflenet_v2_x0_5")
MODELS = (SMALLNET,) + IMAGENET
VARIANTS = ("compact", "fused", "unfused", "collapse")


@dataclass(frozen=True)
class Point:
    model: str
    form: str
    batch: int
    image_size: int

    @property
    def label(self) -> str:
        return f"{self.model}:{self.form}:{self.batch}:{self.image_size}"

    @property
    def imagenet(self) -> bool:
        return self.model in IMAGENET


def _points(batches: Sequence[int], sizes: Sequence[int], imagenet: Sequence[str],
            imagenet_batches: Sequence[int]) -> List[Point]:
    """SmallNet's batch sweep at 32 px and size sweep at batch 32, per form; then the ImageNet nets."""
    out: List[Point] = []
    for form in SMALLNET_FORMS:
        out += [Point(SMALLNET, form, b, 32) for b in batches]
        out += [Point(SMALLNET, form, 32, s) for s in sizes]
    out += [Point(m, PAPER_PRESETS[m].strategy, b, PAPER_PRESETS[m].input_shape[-1])
            for m in imagenet for b in imagenet_batches]
    return list(dict.fromkeys(out))  # 32 px at batch 32 belongs to both sweeps: once


# Quick (CPU): under two minutes on 2 idle cores with bench.run's quick settings (3 rounds, 0.2 s per
# variant): the ImageNet nets at batch 8 only (their unfused step is ~1.5-2 s there; MobileNetV1 and
# V2 take ~15 s each, the 512 batches ~10 s each). Full: every point.
QUICK_POINTS = _points((16, 64, 256, 512), (32, 64, 128), IMAGENET, (8,))
FULL_POINTS = _points((16, 32, 64, 128, 256, 512), (32, 64, 128), IMAGENET, (8, 32))
POINT_SETS = {"quick": QUICK_POINTS, "full": FULL_POINTS}


def parse_point(text: str) -> Point:
    """``model:form:batch:px``, e.g. ``smallnet7:ck:64:32`` or ``mobilenet_v1:cl:8:224``."""
    parts = text.split(":")
    if len(parts) != 4:
        raise ValueError(f"a scaling point is model:form:batch:px, got {text!r}")
    model, form, batch, size = parts
    if model not in MODELS:
        raise ValueError(f"scaling model must be one of {MODELS}, got {model!r}")
    allowed = SMALLNET_FORMS if model == SMALLNET else (PAPER_PRESETS[model].strategy,)
    if form not in allowed:
        raise ValueError(f"{model}: form must be one of {allowed}, got {form!r}")
    return Point(model, form, int(batch), int(size))


def select_points(spec: str, models: Optional[Iterable[str]] = None,
                  forms: Optional[Iterable[str]] = None) -> List[Point]:
    """``quick``, ``full`` or a comma-separated list of points; ``models`` and (SmallNet's) ``forms``
    filter them."""
    spec = spec.strip()
    if spec in POINT_SETS:
        points = list(POINT_SETS[spec])
    else:
        points = [parse_point(p.strip()) for p in spec.split(",") if p.strip()]
    if models is not None:
        models = list(models)
        for model in models:
            if model not in MODELS:
                raise ValueError(f"scaling model must be one of {MODELS}, got {model!r}")
        points = [p for p in points if p.model in models]
    if forms is not None:
        forms = set(forms)
        points = [p for p in points if p.imagenet or p.form in forms]
    return points


def build_models(point: Point, backend: str = "auto") -> Tuple[nn.Module, nn.Module, nn.Module]:
    """(compact, unfused, fused) of a point; the fused model starts from the unfused one's weights."""
    torch.manual_seed(0)
    if point.imagenet:
        preset = PAPER_PRESETS[point.model]
        compact = preset.build()
        torch.manual_seed(0)
        unfused = preset.expand(preset.build(), backend="reference")
        fused = preset.expand(preset.build(), backend=backend)
    else:
        compact = build(point.model, "compact", None, backend, input_size=point.image_size)
        torch.manual_seed(0)
        unfused = build(point.model, point.form, SMALLNET_RATE, "reference", input_size=point.image_size)
        fused = build(point.model, point.form, SMALLNET_RATE, backend, input_size=point.image_size)
    fused.load_state_dict(unfused.state_dict())
    return compact, unfused, fused


def point_rate(point: Point) -> float:
    return PAPER_PRESETS[point.model].rate if point.imagenet else SMALLNET_RATE


def point_classes(point: Point) -> int:
    return 1000 if point.imagenet else 10


def scaling_variants(point: Point, device: torch.device, backend: str = "auto") -> List[Variant]:
    """compact, fused, unfused and the eager online collapse of the unfused model, in that order."""
    compact, unfused, fused = build_models(point, backend)
    collapse = build_peer("collapse", copy.deepcopy(unfused))
    rate = point_rate(point)
    kwargs = dict(batch=point.batch, device=device, image_size=point.image_size, num_classes=point_classes(point))
    return [Variant(compact, "compact", None, "compact", **kwargs),
            Variant(fused, point.form, rate, "fused", **kwargs),
            Variant(unfused, point.form, rate, "unfused", **kwargs),
            Variant(collapse, point.form, rate, "collapse", **kwargs)]


def measure_rates(device: torch.device):
    """bench/roofline.py's rates, measured once per run; None until it is implemented."""
    try:
        return roofline.measure_rates(device)
    except NotImplementedError:
        return None


def floor_ms(fused: nn.Module, compact: nn.Module, rates) -> Optional[float]:
    """The roofline floor (ms) of the work the fused model adds to the compact one's step."""
    if rates is None:
        return None
    try:
        return roofline.floor_ms(roofline.added_work(fused, compact), rates)["total"]
    except NotImplementedError:
        return None


def bench_point(point: Point, device: torch.device, min_run_time: float, rounds: int, rates=None,
                backend: str = "auto") -> dict:
    """One row: the four variants of the point timed in one round-robin, their ratios and the floor."""
    variants = scaling_variants(point, device, backend)
    timings = interleaved({v.variant: v.step for v in variants}, device, min_run_time=min_run_time, rounds=rounds)
    by_name = {v.variant: v for v in variants}
    compact_ms = timings["compact"].median * 1e3
    row = {"model": point.model, "form": point.form, "rate": point_rate(point), "batch": point.batch,
           "image_size": point.image_size, "threads": timings["compact"].threads,
           "noisy": any(t.noisy for t in timings.values())}
    for name in VARIANTS:
        t = timings[name]
        row.update(t.as_dict(name))
        row[f"{name}_images_per_s"] = point.batch / t.median
        row[f"{name}_params"] = sum(p.numel() for p in by_name[name].model.parameters())
    for name in VARIANTS[1:]:
        row[f"{name}_vs_compact"] = row[f"{name}_ms"] / compact_ms
    floor = floor_ms(by_name["fused"].model, by_name["compact"].model, rates)
    row["floor_ms"] = floor
    row["floor_vs_compact"] = (compact_ms + floor) / compact_ms if floor is not None else None
    return row


def expanded_layers(point: Point) -> int:
    """How many layers a point's fused model expands (what ``backend="auto"`` measures on a GPU)."""
    if point.imagenet:
        preset = PAPER_PRESETS[point.model]
        return len(preset.layer_names(preset.build()))
    return len(build(point.model, "compact", None, "torch", input_size=point.image_size).blocks)
