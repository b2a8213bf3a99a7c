"""One training phase: SGD with momentum and a multi-step schedule, an evaluation per epoch,
metrics/curves/checkpoint written after every epoch, and exact resumption from the checkpoint.

Repeatability: each epoch's shuffling and augmentation come from a CPU generator seeded by
``(seed, epoch)`` alone, so a resumed run draws exactly the batches an uninterrupted one would;
with the optimizer, scheduler and model states restored, it continues bit for bit on the CPU.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from expandnets_cuda.train import checkpoint
from expandnets_cuda.train.config import TrainConfig
from expandnets_cuda.train.distill import kd_loss
from expandnets_cuda.train.evaluate import evaluate
from expandnets_cuda.train.forms import Architecture
from expandnets_cuda.train.loader import BatchLoader
from expandnets_cuda.train.report import EpochMetrics, Progress, history_from_rows, plot_curves, write_csv

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"


@dataclass
class PhaseResult:
    model: nn.Module
    arch: Architecture
    history: List[EpochMetrics]
    out_dir: str


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's batch order and augmentation."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _train_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, teacher: Optional[nn.Module], config: TrainConfig, bar):
    model.train()
    loss_sum = torch.zeros((), device=loader.device, dtype=torch.float64)
    correct = torch.zeros((), device=loader.device, dtype=torch.int64)
    seen = 0
    for x, y in loader.batches(generator):
        logits = model(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y)
        else:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = kd_loss(logits, teacher_logits, y, config.kd_temperature, config.kd_alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulated on the device: no host synchronisation per step.
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        seen += y.shape[0]
        bar.update(1)
    return loss_sum.item() / seen, correct.item() / seen


def _resume_point(path: str, identity: dict, config: TrainConfig, progress: Progress) -> Optional[dict]:
    """The saved state to continue from, or None to start afresh."""
    if not os.path.exists(path):
        if config.resume:
            progress.print(f"resume: no checkpoint at {path}; starting afresh")
        return None
    if config.overwrite:
        return None
    if not config.resume:
        raise ValueError(f"{path} already exists: pass resume=True (--resume) to continue that run, "
                         "overwrite=True (--overwrite) to start over, or another out_dir")
    state = checkpoint.load_state(path)
    saved = state["identity"]
    if saved != identity:
        keys = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {identity.get(k)!r}" for k in keys)
        raise ValueError(f"cannot resume {path}: the run differs from the saved one ({details})")
    return state


def fit(model: nn.Module, arch: Architecture, train_loader: BatchLoader, test_loader: BatchLoader,
        config: TrainConfig, out_dir: str, *, phase: str, teacher: Optional[nn.Module] = None) -> PhaseResult:
    """Train ``model`` (on the loaders' device) for ``config.epochs`` epochs, writing
    ``checkpoint.pt``, ``metrics.csv``, ``curves.png`` and, at the end, ``model.pt`` to ``out_dir``.
    ``phase`` names what is trained (it is part of the checkpoint's identity); ``teacher``, if
    given, is distilled from with ``kd_loss``."""
    os.makedirs(out_dir, exist_ok=True)
    progress = Progress(config.progress, config.verbose)
    # Ordinary per-parameter weight decay: on an ExpandNet it decays every expanded factor.
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), gamma=config.lr_gamma)
    identity = {"phase": phase, "architecture": arch.to_dict(), **config.run_identity()}
    state_path = os.path.join(out_dir, CHECKPOINT_FILE)
    history: List[EpochMetrics] = []
    first_epoch = 1
    state = _resume_point(state_path, identity, config, progress)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history = history_from_rows(state["history"])
        first_epoch = state["epoch"] + 1
        progress.print(f"{phase}: resuming {state_path} after epoch {state['epoch']}")

    if first_epoch > config.epochs:
        progress.print(f"{phase}: {arch.describe()} already trained for {config.epochs} epochs")
    else:
        progress.print(f"{phase}: training {arch.describe()} for epochs {first_epoch}..{config.epochs} on "
                       f"{train_loader.device} ({len(train_loader.split)} train / {len(test_loader.split)} test images)")
    epoch_bar = progress.epochs(first_epoch, config.epochs, desc=phase)
    for epoch in epoch_bar:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with progress.steps(len(train_loader), epoch) as bar:
            train_loss, train_acc = _train_epoch(model, train_loader, optimizer, epoch_generator(config.seed, epoch),
                                                 teacher, config, bar)
        scheduler.step()
        test = evaluate(model, test_loader)
        row = EpochMetrics(epoch, lr, train_loss, train_acc, test.loss, test.accuracy, time.perf_counter() - start)
        history.append(row)
        checkpoint.save_state(state_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                              history=[asdict(r) for r in history], identity=identity)
        write_csv(os.path.join(out_dir, METRICS_FILE), history)
        epoch_bar.set_postfix_str(f"test acc {100 * test.accuracy:.2f}%")
        progress.print(f"{phase}: {row.line(config.epochs)}")

    plot_curves(os.path.join(out_dir, CURVES_FILE), history, f"{phase}: {arch.describe()}")
    checkpoint.save_model(os.path.join(out_dir, MODEL_FILE), model, arch, asdict(history[-1]))
    return PhaseResult(model, arch, history, out_dir)
