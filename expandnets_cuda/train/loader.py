"""Mini-batches of an in-memory ``ImageSplit``, with the CIFAR augmentation done in torch.

Training batches: shuffle, random crop after zero-padding each side (torchvision's
``RandomCrop(size, padding)``), optional horizontal flip, then per-channel normalisation.
Every random draw comes from the ``torch.Generator`` passed per epoch (on the CPU, so a run
draws the same batches on every device); the images move to the device as uint8 and are
augmented there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

from expandnets_cuda.train.data import ImageSplit

Batch = Tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int = 4
    hflip: bool = True


def channel_stats(images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale."""
    values = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    return values.mean(1).float(), values.std(1).clamp_min(1e-6).float()


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``padding`` on every side and cropped back at a random offset."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    rows = (top[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


class BatchLoader:
    """Normalised float32 batches ``(x, y)`` of ``split`` on ``device``; ``mean``/``std`` are the
    per-channel statistics to normalise with (the training split's, for every split)."""

    def __init__(self, split: ImageSplit, batch_size: int, mean: torch.Tensor, std: torch.Tensor, *,
                 device: torch.device, augmentation: Optional[Augmentation] = None):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.split, self.batch_size, self.augmentation = split, batch_size, augmentation
        self.device = torch.device(device)
        self._mean = mean.to(self.device)[None, :, None, None]
        self._std = std.to(self.device)[None, :, None, None]

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self._mean) / self._std

    def batches(self, generator: Optional[torch.Generator] = None) -> Iterator[Batch]:
        """One pass over the split: shuffled and augmented when a ``generator`` is given (training),
        in order and untouched without one (evaluation)."""
        order = None if generator is None else torch.randperm(len(self.split), generator=generator)
        for start in range(0, len(self.split), self.batch_size):
            index = slice(start, start + self.batch_size) if order is None else order[start:start + self.batch_size]
            images = self.split.images[index].to(self.device)
            labels = self.split.labels[index].to(self.device)
            if generator is not None and self.augmentation is not None:
                if self.augmentation.crop_padding:
                    images = random_crop(images, self.augmentation.crop_padding, generator)
                if self.augmentation.hflip:
                    images = random_hflip(images, generator)
            yield self._normalise(images), labels
