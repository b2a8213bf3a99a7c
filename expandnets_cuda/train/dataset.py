"""The in-memory image dataset records: uint8 images ``(N, C, H, W)`` with int64 labels."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


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
