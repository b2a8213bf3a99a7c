"""How far one network's outputs are from another's on the same inputs: the measure that the
contraction check (``train.evaluate``) and the export check (``export``) share."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Agreement:
    rel_error: float  # ||got - want|| / ||want|| over all outputs
    max_abs_error: float
    differing_predictions: int  # rows whose argmax differs (2-D outputs: logits)


def agreement(got: torch.Tensor, want: torch.Tensor) -> Agreement:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    diff = got - want
    differing = int((got.argmax(-1) != want.argmax(-1)).sum()) if got.dim() == 2 else 0
    return Agreement((diff.norm() / want.norm().clamp_min(1e-300)).item(), diff.abs().max().item(), differing)
