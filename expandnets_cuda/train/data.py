"""In-memory image datasets: uint8 images ``(N, C, H, W)`` with int64 labels, and the dispatch from
a dataset name to its reader (``digits`` embedded, ``cifar10``/``cifar100`` from a local copy)."""
from __future__ import annotations

from typing import Optional

from expandnets_cuda.train.dataset import ImageDataset, ImageSplit  # noqa: F401  (the records, read here too)

DATASETS = ("digits", "cifar10", "cifar100")


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
