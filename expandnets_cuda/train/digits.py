"""The embedded dataset: scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside
scikit-learn, so nothing is downloaded), upscaled so the CIFAR models run on it unchanged.

Split: per class, every fifth image (in scikit-learn's order) is a test image: 1,442 training and
355 test images, every class in both, the same on every machine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from expandnets_cuda.train.dataset import ImageDataset, ImageSplit

TEST_EVERY = 5
MIN_SIZE = 8


def load_digits_dataset(size: int = 32) -> ImageDataset:
    """Digits as one-channel uint8 images of ``size`` x ``size`` (bilinear upscaling), 10 classes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE:
        raise ValueError(f"digits_size must be an int >= {MIN_SIZE}, got {size!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    # Pixel values are 0..16; map them to 0..255 like the uint8 CIFAR images.
    images = torch.from_numpy(digits.images).float().unsqueeze(1) * (255.0 / 16.0)
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(digits.target).long()

    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for cls in labels.unique():
        is_test[(labels == cls).nonzero().squeeze(1)[TEST_EVERY - 1::TEST_EVERY]] = True
    return ImageDataset("digits", ImageSplit(images[~is_test], labels[~is_test]),
                        ImageSplit(images[is_test], labels[is_test]), num_classes=10)
