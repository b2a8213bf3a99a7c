"""``python -m expandnets_cuda.train``: train a model in one of the paper's forms, then contract it.

Exit status: 0 on success, 1 if the contracted network's logits do not match the expanded one's,
2 for a bad option, a missing file or a corrupt dataset.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

from expandnets_cuda.train.config import DEFAULT_EPOCHS, TrainConfig
from expandnets_cuda.train.data import DATASETS
from expandnets_cuda.train.forms import FORMS, MODELS
from expandnets_cuda.train.pipeline import run

DEFAULTS = TrainConfig()


def _milestones(text: str):
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"milestones must be comma-separated epochs like 50,100, got {text!r}")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends a default only where there is one: ``None`` means "decided later", which the
    option's own help says (e.g. "default: epochs/3, 2*epochs/3"); flags need none."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expandnets_cuda.train",
        description="Train a compact network or an ExpandNet (CL/CK/FC and combinations), optionally with "
                    "+Init and knowledge distillation, and check that the trained ExpandNet contracts exactly.",
        formatter_class=_HelpWithDefaults)
    what = parser.add_argument_group("what to train")
    what.add_argument("--model", choices=tuple(MODELS), default=DEFAULTS.model)
    what.add_argument("--form", choices=tuple(FORMS), default=DEFAULTS.form)
    what.add_argument("--rate", type=float, default=DEFAULTS.rate, help="expansion rate r >= 1")
    what.add_argument("--init", action="store_true",
                      help="+Init: train the nonlinear counterpart first and start from its weights")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default=DEFAULTS.dataset,
                      help="digits is embedded (scikit-learn); cifar10/cifar100 need --data-dir")
    data.add_argument("--data-dir", help="CIFAR 'python version' archive, its extracted folder, or a folder "
                                         "holding either (never downloaded)")
    data.add_argument("--digits-size", type=int, default=DEFAULTS.digits_size, help="digits upscaled to this size")
    data.add_argument("--train-limit", type=int, help="use only the first N training images")
    data.add_argument("--test-limit", type=int, help="use only the first N test images")

    recipe = parser.add_argument_group("recipe (defaults: the paper's CIFAR recipe)")
    recipe.add_argument("--epochs", type=int,
                        help="default: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_EPOCHS.items()))
    recipe.add_argument("--milestones", type=_milestones,
                        help="epochs where lr is multiplied by --lr-gamma, e.g. 50,100 (default: epochs/3, 2*epochs/3)")
    recipe.add_argument("--lr", type=float, default=DEFAULTS.lr)
    recipe.add_argument("--lr-gamma", type=float, default=DEFAULTS.lr_gamma)
    recipe.add_argument("--momentum", type=float, default=DEFAULTS.momentum)
    recipe.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                        help="per-parameter weight decay (on every expanded factor of an ExpandNet)")
    recipe.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    recipe.add_argument("--crop-padding", type=int, default=DEFAULTS.crop_padding,
                        help="random crop after zero-padding this much (0: no crop)")
    recipe.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="random horizontal flips (default: on for CIFAR, off for digits)")

    kd = parser.add_argument_group("knowledge distillation (Hinton)")
    kd.add_argument("--teacher", help="teacher model file (model.pt of an earlier run)")
    kd.add_argument("--teacher-model", choices=tuple(MODELS), help="train this teacher first")
    kd.add_argument("--teacher-form", choices=tuple(FORMS), default=DEFAULTS.teacher_form)
    kd.add_argument("--teacher-rate", type=float, default=DEFAULTS.teacher_rate)
    kd.add_argument("--kd-temperature", type=float, default=DEFAULTS.kd_temperature)
    kd.add_argument("--kd-alpha", type=float, default=DEFAULTS.kd_alpha, help="weight of the soft-target term")

    session = parser.add_argument_group("run")
    session.add_argument("--seed", type=int, default=DEFAULTS.seed)
    session.add_argument("--backend", default=DEFAULTS.backend, help="backend of the expanded units")
    session.add_argument("--device", default=DEFAULTS.device, help="auto: cuda when available, else cpu")
    session.add_argument("--out-dir", help="default: runs/<dataset>-<model>-<form><rate>[-init][-kd]")
    session.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out-dir")
    session.add_argument("--overwrite", action="store_true", help="start over even if --out-dir holds a checkpoint")
    session.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size)
    session.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bars (default: only on a terminal)")
    session.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = vars(build_parser().parse_args(argv))
    args["verbose"] = not args.pop("quiet")
    start = time.perf_counter()
    try:
        result = run(TrainConfig(**args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return 0 if result.contraction is None or result.contraction.ok else 1


if __name__ == "__main__":
    sys.exit(main())
