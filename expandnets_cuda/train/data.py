"""In-memory image datasets: uint8 images ``(N, C, H, W)`` with int64 labels, and the dispatch from
a dataset name to its reader (``digits`` embedded, ``cifar10``/``cifar100`` from a local copy)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

DATASETS = ("digits", "cifar10", "cifar100")


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                             f"of shape {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be int64 of shape ({self.images.shape[0]},), got {self.labels.dtype} "
                             f"of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def head(self, count: Optional[int]) -> "ImageSplit":
        """The first ``count`` examples (all of them for ``None``)."""
        if count is None:
            return self
        return ImageSplit(self.images[:count], self.labels[:count])


@dataclass(frozen=True)
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]


def load_dataset(name: str, data_dir: Optional[str] = None, *, digits_size: int = 32) -> ImageDataset:
    """``digits`` (scikit-learn's 8x8 digits upscaled to ``digits_size``; ``data_dir`` must be None)
    or ``cifar10``/``cifar100`` from ``data_dir`` (an archive, its extracted folder, or a folder
    holding either; nothing is downloaded)."""
    if name == "digits":
        if data_dir is not None:
            raise ValueError(f"data_dir={data_dir!r}: the digits dataset is embedded and reads no files; "
                             "data_dir applies to cifar10 and cifar100")
        from expandnets_cuda.train.digits import load_digits_dataset
        return load_digits_dataset(digits_size)
    if name in ("cifar10", "cifar100"):
        if data_dir is None:
            raise ValueError(f"dataset {name!r} needs data_dir: the path of the 'python version' archive, "
                             "its extracted folder, or a folder holding either (nothing is downloaded)")
        from expandnets_cuda.train.cifar import load_cifar
        return load_cifar(name, data_dir)
    raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
