"""Evaluation, and the check that a trained ExpandNet contracts to a compact network with the same
function: same logits (up to float32 rounding) and the same accuracy on the test set."""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from expandnets_cuda.deploy.agreement import agreement
from expandnets_cuda.convert.model import contract_model
from expandnets_cuda.train.loader import BatchLoader

# ||contracted - expanded|| / ||expanded|| over all test logits. Both run in float32 (the expanded
# net composes its weights in float32, the contraction in float64), so they agree to ~1e-6.
CONTRACTION_REL_TOL = 1e-4


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    logits: torch.Tensor  # (N, classes), on the CPU


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader) -> Evaluation:
    """Mean cross-entropy, accuracy and logits of ``model`` (put in eval mode) over ``loader``."""
    model.eval()
    logits, labels = [], []
    for x, y in loader.batches():
        logits.append(model(x).float())
        labels.append(y)
    logits, labels = torch.cat(logits), torch.cat(labels)
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return Evaluation(loss, accuracy, logits.cpu())


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls (no effect on the CPU), so that the two
    networks are compared at float32 precision rather than at TF32's 1e-3."""
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9: the fp32_precision API
        settings = [(torch.backends.cudnn.conv, "fp32_precision", "ieee"),
                    (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    else:
        settings = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    saved = [getattr(owner, name) for owner, name, _ in settings]
    try:
        for owner, name, value in settings:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(settings, saved):
            setattr(owner, name, value)


@dataclass(frozen=True)
class ContractionCheck:
    expanded_accuracy: float
    contracted_accuracy: float
    max_abs_logit_diff: float
    rel_logit_diff: float
    differing_predictions: int
    tolerance: float = CONTRACTION_REL_TOL

    @property
    def ok(self) -> bool:
        """Logits agree to the tolerance. (An accuracy difference with agreeing logits can only come
        from a near-tie flipping an argmax; ``differing_predictions`` counts those.)"""
        return self.rel_logit_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def contract_and_check(model: nn.Module, loader: BatchLoader) -> Tuple[nn.Module, ContractionCheck]:
    """``contract_model(model)`` in eval mode, and how its test logits compare with ``model``'s."""
    model.eval()
    compact = contract_model(model).eval()
    with full_fp32():
        expanded, contracted = evaluate(model, loader), evaluate(compact, loader)
    found = agreement(contracted.logits, expanded.logits)
    check = ContractionCheck(
        expanded_accuracy=expanded.accuracy, contracted_accuracy=contracted.accuracy,
        max_abs_logit_diff=found.max_abs_error, rel_logit_diff=found.rel_error,
        differing_predictions=found.differing_predictions)
    return compact, check
