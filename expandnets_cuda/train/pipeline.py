"""A whole training run: data, the optional teacher and "+Init" phases, the network itself, and
its exact contraction at the end.

Phases (each in its own folder, each resumable):
- ``<out_dir>/teacher``: the distillation teacher, when ``teacher_model`` asks to train one first
  (cross-entropy, same recipe); it then runs contracted, which is the same function at the
  compact cost;
- ``<out_dir>/nonlinear``: with ``init=True``, the nonlinear counterpart (cross-entropy), whose
  weights ``init_from_nonlinear`` copies into the ExpandNet;
- ``<out_dir>``: the network itself, distilled from the teacher if there is one. An ExpandNet is
  then contracted (``model_compact.pt``) and checked against the expanded one on the test set.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
from torch import nn

from expandnets_cuda.convert.model import contract_model, init_from_nonlinear
from expandnets_cuda.train import checkpoint
from expandnets_cuda.train.config import TrainConfig
from expandnets_cuda.train.data import ImageDataset, load_dataset
from expandnets_cuda.train.evaluate import ContractionCheck, contract_and_check
from expandnets_cuda.train.forms import Architecture, build_model
from expandnets_cuda.train.loader import Augmentation, BatchLoader, channel_stats
from expandnets_cuda.train.loop import fit
from expandnets_cuda.train.report import EpochMetrics

COMPACT_MODEL_FILE = "model_compact.pt"
SUMMARY_FILE = "summary.json"


@dataclass
class TrainResult:
    """``model``: the trained network in its training form; ``compact_model``: its contraction
    (``model`` itself when the form is compact); ``contraction``: the check, None for compact."""

    config: TrainConfig
    arch: Architecture
    model: nn.Module
    compact_model: nn.Module
    history: List[EpochMetrics]
    contraction: Optional[ContractionCheck]
    out_dir: str

    def summary(self) -> str:
        last = self.history[-1]
        lines = [f"{self.arch.describe()} on {self.config.dataset}, {last.epoch} epochs: "
                 f"train acc {100 * last.train_acc:.2f}%, test acc {100 * last.test_acc:.2f}%"]
        check = self.contraction
        if check is None:
            lines.append("compact form: nothing to contract")
        else:
            lines.append(f"test accuracy   expanded {100 * check.expanded_accuracy:.2f}%   "
                         f"contracted {100 * check.contracted_accuracy:.2f}%")
            lines.append(f"logits          max |diff| {check.max_abs_logit_diff:.3e}   relative "
                         f"{check.rel_logit_diff:.3e}   differing predictions {check.differing_predictions}   "
                         + ("OK" if check.ok else f"MISMATCH (tolerance {check.tolerance:g})"))
        lines.append(f"outputs in {self.out_dir}")
        return "\n".join(lines)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a torch device ({exc})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available here")
    return device


def _dataset(config: TrainConfig) -> ImageDataset:
    data = load_dataset(config.dataset, config.data_dir, digits_size=config.digits_size)
    return ImageDataset(data.name, data.train.head(config.train_limit), data.test.head(config.test_limit),
                        data.num_classes)


def _teacher(config: TrainConfig, student: Architecture, device: torch.device, train_loader: BatchLoader,
             test_loader: BatchLoader) -> Optional[nn.Module]:
    if config.teacher is not None:
        teacher, arch = checkpoint.load_model(config.teacher, backend=config.backend, device=device)
        for field in ("num_classes", "in_channels", "input_size"):
            if getattr(arch, field) != getattr(student, field):
                raise ValueError(f"teacher {config.teacher!r} was built for {field}={getattr(arch, field)}, "
                                 f"this dataset needs {getattr(student, field)}")
    elif config.teacher_model is not None:
        arch = student.replace(model=config.teacher_model, form=config.teacher_form, rate=config.teacher_rate)
        torch.manual_seed(config.seed)
        teacher = fit(build_model(arch, config.backend, device), arch, train_loader, test_loader, config,
                      os.path.join(config.out_dir, "teacher"), phase="teacher").model
    else:
        return None
    if arch.expanded:
        teacher = contract_model(teacher)
    teacher.eval().requires_grad_(False)
    return teacher


def _initial_model(config: TrainConfig, arch: Architecture, device: torch.device, train_loader: BatchLoader,
                   test_loader: BatchLoader) -> nn.Module:
    """A fresh network of ``arch``, or with ``init``, one holding its trained nonlinear counterpart's weights."""
    torch.manual_seed(config.seed)
    model = build_model(arch, config.backend, device)
    if not config.init:
        return model
    nonlinear_arch = arch.replace(nonlinear=True)
    torch.manual_seed(config.seed)
    nonlinear = fit(build_model(nonlinear_arch, config.backend, device), nonlinear_arch, train_loader, test_loader,
                    config, os.path.join(config.out_dir, "nonlinear"), phase="nonlinear")
    return init_from_nonlinear(model, nonlinear.model)


def run(config: Optional[TrainConfig] = None, **options) -> TrainResult:
    """Train as ``config`` says (``TrainConfig()`` by default; ``options`` override its fields).

    Writes to ``config.out_dir``: ``metrics.csv``, ``curves.png``, ``checkpoint.pt``, ``model.pt``,
    ``model_compact.pt`` (ExpandNets) and ``summary.json``; phase folders as the module says.
    """
    config = (config if config is not None else TrainConfig()).replace(**options).resolved()
    device = resolve_device(config.device)
    data = _dataset(config)
    mean, std = channel_stats(data.train.images)
    augmentation = Augmentation(config.crop_padding, config.hflip)
    train_loader = BatchLoader(data.train, config.batch_size, mean, std, device=device, augmentation=augmentation)
    test_loader = BatchLoader(data.test, config.eval_batch_size, mean, std, device=device)
    arch = Architecture(config.model, config.form, config.rate, data.num_classes, data.in_channels, data.image_size)

    teacher = _teacher(config, arch, device, train_loader, test_loader)
    model = _initial_model(config, arch, device, train_loader, test_loader)
    result = fit(model, arch, train_loader, test_loader, config, config.out_dir, phase="main", teacher=teacher)

    contraction = None
    compact = result.model
    if arch.expanded:
        compact, contraction = contract_and_check(result.model, test_loader)
        checkpoint.save_model(os.path.join(config.out_dir, COMPACT_MODEL_FILE), compact,
                              arch.replace(form="compact"))
    outcome = TrainResult(config, arch, result.model, compact, result.history, contraction, config.out_dir)
    with open(os.path.join(config.out_dir, SUMMARY_FILE), "w") as f:
        json.dump({"config": config.to_dict(), "architecture": arch.to_dict(), "final": asdict(result.history[-1]),
                   "contraction": contraction.to_dict() if contraction else None}, f, indent=2)
    return outcome
