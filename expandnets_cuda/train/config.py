"""``TrainConfig``: every option of a training run, with the paper's CIFAR recipe as the defaults.

Options left ``None`` take their dataset's default in ``resolved()``:

| dataset | epochs | lr milestones | horizontal flip |
|---|---|---|---|
| cifar10, cifar100 (the paper's recipe) | 150 | 50, 100 | yes |
| digits (embedded; about 20 s on a 2-core CPU) | 30 | 10, 20 | no (digits are not mirror-symmetric) |

Milestones default to a third and two thirds of the epochs, the paper's 50/100 of 150.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from expandnets_cuda.train.data import DATASETS
from expandnets_cuda.train.distill import check_kd_options
from expandnets_cuda.train.forms import FORMS, MODELS

DEFAULT_EPOCHS = {"digits": 30, "cifar10": 150, "cifar100": 150}
DEFAULT_HFLIP = {"digits": False, "cifar10": True, "cifar100": True}
# Options that change where or how visibly a run happens, not what it computes: a run may be
# resumed with different values.
RUNTIME_OPTIONS = frozenset({"data_dir", "out_dir", "resume", "overwrite", "progress", "verbose", "device",
                             "backend", "eval_batch_size"})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a run (the CLI's flags, one to one); ``run`` resolves the ``None`` defaults."""

    # What to train: the model, its form and rate; init=True is the paper's "+Init".
    model: str = "smallnet3"
    form: str = "cl"
    rate: float = 4.0
    init: bool = False
    # Data. train_limit/test_limit keep only the first N images of a split (smoke tests).
    dataset: str = "digits"
    data_dir: Optional[str] = None
    digits_size: int = 32
    train_limit: Optional[int] = None
    test_limit: Optional[int] = None
    # The recipe: SGD with momentum, lr divided by 1/lr_gamma at each milestone epoch.
    epochs: Optional[int] = None
    milestones: Optional[Tuple[int, ...]] = None
    lr: float = 0.01
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    crop_padding: int = 4
    hflip: Optional[bool] = None
    # Knowledge distillation: a teacher file (teacher) or a teacher to train first (teacher_model).
    teacher: Optional[str] = None
    teacher_model: Optional[str] = None
    teacher_form: str = "compact"
    teacher_rate: float = 4.0
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    # The run.
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    out_dir: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    progress: Optional[bool] = None
    verbose: bool = True
    eval_batch_size: int = 500

    @property
    def distills(self) -> bool:
        return self.teacher is not None or self.teacher_model is not None

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "TrainConfig":
        """A copy with the dataset defaults filled in (see the module docstring), validated."""
        self._validate_choices()
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.dataset]
        if not _is_int(epochs) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        milestones = self.milestones
        if milestones is None:
            milestones = tuple(sorted({m for m in (round(epochs / 3), round(2 * epochs / 3)) if 0 < m < epochs}))
        config = self.replace(
            epochs=epochs, milestones=tuple(milestones),
            hflip=self.hflip if self.hflip is not None else DEFAULT_HFLIP[self.dataset],
            out_dir=self.out_dir if self.out_dir is not None else self._default_out_dir())
        config._validate_values()
        return config

    def _default_out_dir(self) -> str:
        form = self.form if self.form == "compact" else f"{self.form}{self.rate:g}"
        suffix = ("-init" if self.init else "") + ("-kd" if self.distills else "")
        return os.path.join("runs", f"{self.dataset}-{self.model}-{form}{suffix}")

    def _validate_choices(self) -> None:
        for name, choices in (("model", MODELS), ("form", FORMS), ("dataset", DATASETS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {tuple(choices)}, got {getattr(self, name)!r}")
        if self.teacher_model is not None and self.teacher_model not in MODELS:
            raise ValueError(f"teacher_model must be one of {tuple(MODELS)} or None, got {self.teacher_model!r}")
        if self.teacher_form not in FORMS:
            raise ValueError(f"teacher_form must be one of {tuple(FORMS)}, got {self.teacher_form!r}")

    def _validate_values(self) -> None:
        for name in ("rate", "teacher_rate"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a number >= 1, got {getattr(self, name)!r}")
        for name in ("batch_size", "eval_batch_size", "digits_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if not _is_int(self.crop_padding) or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if not _is_number(self.lr) or self.lr < 0:
            raise ValueError(f"lr must be a number >= 0, got {self.lr!r}")
        for name in ("lr_gamma", "momentum"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {getattr(self, name)!r}")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if any(not _is_int(m) for m in self.milestones) or list(self.milestones) != sorted(set(self.milestones)) \
                or any(not 0 < m < self.epochs for m in self.milestones):
            raise ValueError(f"milestones must be increasing epochs in (0, epochs={self.epochs}), got {self.milestones!r}")
        for name in ("init", "hflip", "resume", "overwrite", "verbose"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool or None (auto: only on a terminal), got {self.progress!r}")
        if self.init and self.form == "compact":
            raise ValueError("init (+Init) needs an expanded form: a compact network has no nonlinear counterpart")
        if self.teacher is not None and self.teacher_model is not None:
            raise ValueError("give either teacher (a teacher file) or teacher_model (a teacher to train first), not both")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        check_kd_options(self.kd_temperature, self.kd_alpha)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def run_identity(self) -> Dict[str, Any]:
        """What a resumed run must share with the run that saved the checkpoint."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_OPTIONS}
