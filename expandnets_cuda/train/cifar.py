"""CIFAR-10 / CIFAR-100 from the official "python version" files, read in place (never downloaded,
never extracted to disk).

``data_dir`` may be the archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``), its
extracted folder (``cifar-10-batches-py`` / ``cifar-100-python``), or a folder holding either (the
extracted folder wins). Each batch is a pickled dict with ``data`` (uint8, ``(N, 3072)``, channel-
major 32x32 RGB) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100); it is unpickled by
``safe_pickle``, which refuses anything but plain data.
"""
from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch

from expandnets_cuda.train import safe_pickle
from expandnets_cuda.train.dataset import ImageDataset, ImageSplit

IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarLayout:
    archive: str
    folder: str
    train_files: Tuple[str, ...]
    test_files: Tuple[str, ...]
    label_key: str
    num_classes: int


LAYOUTS: Dict[str, CifarLayout] = {
    "cifar10": CifarLayout("cifar-10-python.tar.gz", "cifar-10-batches-py",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10),
    "cifar100": CifarLayout("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",),
                            "fine_labels", 100),
}

Reader = Callable[[Sequence[str]], Dict[str, bytes]]


def _folder_reader(folder: str) -> Reader:
    def read(names: Sequence[str]) -> Dict[str, bytes]:
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise FileNotFoundError(f"{folder}: missing batch file(s) {missing}")
        out = {}
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[name] = f.read()
        return out
    return read


def _archive_reader(archive: str, folder: str) -> Reader:
    def read(names: Sequence[str]) -> Dict[str, bytes]:
        wanted = {f"{folder}/{n}": n for n in names}
        out = {}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:  # one pass: a gzip stream cannot seek back cheaply
                    name = wanted.get(member.name.removeprefix("./"))
                    if name is None:
                        continue
                    if not member.isfile():
                        raise ValueError(f"{archive}: member {member.name} is not a regular file")
                    out[name] = tar.extractfile(member).read()
        except PermissionError:
            raise
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise ValueError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}: {exc})") from exc
        missing = [path for path, name in wanted.items() if name not in out]
        if missing:
            raise FileNotFoundError(f"{archive}: archive has no member(s) {missing}")
        return out
    return read


def _locate(layout: CifarLayout, data_dir: str) -> Tuple[str, Reader]:
    """The source ``data_dir`` designates and a reader for it."""
    path = os.fspath(data_dir)
    if os.path.isfile(path):
        return path, _archive_reader(path, layout.folder)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"data_dir {path!r} does not exist")
    if os.path.basename(os.path.normpath(path)) == layout.folder:
        return path, _folder_reader(path)
    folder, archive = os.path.join(path, layout.folder), os.path.join(path, layout.archive)
    if os.path.isdir(folder):
        return folder, _folder_reader(folder)
    if os.path.isfile(archive):
        return archive, _archive_reader(archive, layout.folder)
    raise FileNotFoundError(f"data_dir {path!r} holds neither {layout.folder}/ nor {layout.archive} "
                            "(nothing is downloaded: fetch the 'python version' from "
                            "https://www.cs.toronto.edu/~kriz/cifar.html)")


def _text_keys(batch) -> dict:
    """Python 2 batches unpickle with str keys, Python 3 rewrites with bytes keys: accept both."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _parse_batch(raw: bytes, source: str, layout: CifarLayout) -> ImageSplit:
    batch = safe_pickle.loads(raw, source)
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: expected a pickled dict, got {type(batch).__name__}")
    batch = _text_keys(batch)
    missing = [key for key in ("data", layout.label_key) if key not in batch]
    if missing:
        raise ValueError(f"{source}: batch has no {missing} entry (keys: {sorted(batch)})")
    data, labels = batch["data"], batch[layout.label_key]
    size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        described = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{source}: 'data' must be a uint8 array of shape (N, {size}), got {described}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {layout.label_key!r} is not a list of integers") from exc
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{source}: {data.shape[0]} images but {layout.label_key!r} has shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise ValueError(f"{source}: labels must lie in [0, {layout.num_classes}), found "
                         f"[{labels.min()}, {labels.max()}]")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *IMAGE_SHAPE).copy())
    return ImageSplit(images, torch.from_numpy(labels))


def _read_split(files: Dict[str, bytes], names: Sequence[str], source: str, layout: CifarLayout) -> ImageSplit:
    parts = [_parse_batch(files[name], f"{source}:{name}", layout) for name in names]
    return ImageSplit(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def load_cifar(name: str, data_dir: str) -> ImageDataset:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (fine labels) from ``data_dir``.

    Raises ``FileNotFoundError`` naming what is missing and ``ValueError`` for a corrupt archive or
    batch (including a pickle that names a disallowed global)."""
    if name not in LAYOUTS:
        raise ValueError(f"name must be one of {tuple(LAYOUTS)}, got {name!r}")
    layout = LAYOUTS[name]
    source, read = _locate(layout, data_dir)
    files = read(layout.train_files + layout.test_files)
    return ImageDataset(name, _read_split(files, layout.train_files, source, layout),
                        _read_split(files, layout.test_files, source, layout), layout.num_classes)
