"""Data side of the training pipeline: the embedded digits, CIFAR-10/100 read from archives and
folders written here in the real format, the restricted unpickler, and the torch augmentation."""
from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from expandnets_cuda.train import safe_pickle
from expandnets_cuda.train.cifar import LAYOUTS, load_cifar
from expandnets_cuda.train.data import ImageSplit, load_dataset
from expandnets_cuda.train.loader import Augmentation, BatchLoader, channel_stats, random_crop, random_hflip

IMAGES_PER_BATCH = 4


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny workloads are fastest single-threaded, and one thread cannot be slowed by OpenMP
    spin-waiting when other processes share the cores (10x slowdowns measured on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- fake CIFAR in the official "python version" format -------------------------------------------

def _batch(num_classes: int, label_key: bytes, seed: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(IMAGES_PER_BATCH, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=IMAGES_PER_BATCH)]
    return {b"batch_label": b"fake batch", b"data": data, label_key: labels}


def _cifar_files(name: str):
    """{file name: the dict pickled into it} for every file the reader needs, plus the meta file."""
    layout = LAYOUTS[name]
    key = layout.label_key.encode()
    files = {f: _batch(layout.num_classes, key, seed) for seed, f in enumerate(layout.train_files + layout.test_files)}
    files["batches.meta" if name == "cifar10" else "meta"] = {b"label_names": [b"x"] * layout.num_classes}
    return files


def _pickled(batch) -> bytes:
    return pickle.dumps(batch, protocol=2)  # the originals are protocol-2 pickles


def write_archive(directory, name: str, files=None, transform=_pickled) -> str:
    layout = LAYOUTS[name]
    files = _cifar_files(name) if files is None else files
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, layout.archive)
    with tarfile.open(path, "w:gz") as tar:
        for file_name, batch in files.items():
            raw = transform(batch)
            info = tarfile.TarInfo(f"{layout.folder}/{file_name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def write_folder(directory, name: str, files=None) -> str:
    folder = os.path.join(directory, LAYOUTS[name].folder)
    os.makedirs(folder)
    for file_name, batch in (_cifar_files(name) if files is None else files).items():
        with open(os.path.join(folder, file_name), "wb") as f:
            f.write(_pickled(batch))
    return folder


def _expected(name: str):
    layout, files = LAYOUTS[name], _cifar_files(name)

    def split(names):
        images = np.concatenate([files[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
        labels = sum((files[n][layout.label_key.encode()] for n in names), [])
        return torch.from_numpy(images), torch.tensor(labels)
    return split(layout.train_files), split(layout.test_files)


def _assert_matches(dataset, name):
    (train_x, train_y), (test_x, test_y) = _expected(name)
    assert dataset.num_classes == LAYOUTS[name].num_classes
    assert torch.equal(dataset.train.images, train_x) and torch.equal(dataset.train.labels, train_y)
    assert torch.equal(dataset.test.images, test_x) and torch.equal(dataset.test.labels, test_y)
    assert dataset.in_channels == 3 and dataset.image_size == 32


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_archive_folder_and_parent(tmp_path, name):
    archive = write_archive(tmp_path / "a", name)
    folder = write_folder(tmp_path / "f", name)
    for data_dir in (archive, tmp_path / "a", folder, tmp_path / "f"):
        _assert_matches(load_dataset(name, str(data_dir)), name)


def test_cifar_batch_with_python2_global_names(tmp_path):
    """The original files name numpy.core.multiarray._reconstruct (numpy 1.x's path)."""
    def as_python2(batch):
        raw = _pickled(batch)
        assert b"data" not in batch or b"numpy._core.multiarray\n_reconstruct" in raw
        return raw.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    _assert_matches(load_cifar("cifar10", write_archive(tmp_path, "cifar10", transform=as_python2)), "cifar10")


def test_cifar_batch_with_str_keys_and_protocol_4(tmp_path):
    files = {n: {k.decode(): v for k, v in b.items()} for n, b in _cifar_files("cifar100").items()}
    path = write_archive(tmp_path, "cifar100", files, transform=lambda b: pickle.dumps(b, protocol=4))
    _assert_matches(load_cifar("cifar100", path), "cifar100")


def test_missing_paths_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/ nor cifar-10-python.tar.gz"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="embedded"):
        load_dataset("digits", str(tmp_path))
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("mnist")


def test_missing_batch_in_folder_and_archive(tmp_path):
    files = _cifar_files("cifar10")
    del files["data_batch_3"]
    folder = write_folder(tmp_path, "cifar10", files)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_3"):
        load_cifar("cifar10", folder)
    archive = write_archive(tmp_path, "cifar10", files)
    with pytest.raises(FileNotFoundError, match=r"cifar-10-python.tar.gz.*cifar-10-batches-py/data_batch_3"):
        load_cifar("cifar10", archive)


def test_truncated_and_non_gzip_archives(tmp_path):
    archive = write_archive(tmp_path, "cifar100")
    raw = open(archive, "rb").read()
    with open(archive, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cifar-100-python.tar.gz: truncated or corrupt archive"):
        load_cifar("cifar100", archive)
    with open(archive, "wb") as f:
        f.write(b"not a gzip file at all")
    with pytest.raises(ValueError, match="truncated or corrupt archive"):
        load_cifar("cifar100", str(tmp_path))


def test_corrupt_and_malformed_batches(tmp_path):
    files = _cifar_files("cifar10")
    folder = write_folder(tmp_path / "a", "cifar10", files)
    with open(os.path.join(folder, "test_batch"), "wb") as f:
        f.write(_pickled(files["test_batch"])[:50])
    with pytest.raises(ValueError, match=r"test_batch: not a readable pickle"):
        load_cifar("cifar10", folder)

    bad_shape = dict(files, data_batch_2={**files["data_batch_2"], b"data": np.zeros((4, 100), np.uint8)})
    with pytest.raises(ValueError, match=r"data_batch_2: 'data' must be a uint8 array of shape \(N, 3072\)"):
        load_cifar("cifar10", write_folder(tmp_path / "b", "cifar10", bad_shape))
    bad_label = dict(files, data_batch_1={**files["data_batch_1"], b"labels": [0, 1, 2, 10]})
    with pytest.raises(ValueError, match=r"data_batch_1: labels must lie in \[0, 10\)"):
        load_cifar("cifar10", write_folder(tmp_path / "c", "cifar10", bad_label))
    no_labels = dict(files, data_batch_1={b"data": files["data_batch_1"][b"data"]})
    with pytest.raises(ValueError, match=r"data_batch_1: batch has no \['labels'\] entry"):
        load_cifar("cifar10", write_folder(tmp_path / "d", "cifar10", no_labels))


# --- the restricted unpickler ---------------------------------------------------------------------

CALLS = []


def _record_call(*args):
    CALLS.append(args)
    return args


class _Payload:
    def __reduce__(self):
        return _record_call, ("ran",)


def test_pickle_with_disallowed_global_is_refused_without_running_it(tmp_path):
    files = _cifar_files("cifar10")
    files["data_batch_4"] = {**files["data_batch_4"], b"extra": _Payload()}
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"data_batch_4: refusing to unpickle global "
                                                            r"test_train_data._record_call"):
        load_cifar("cifar10", write_archive(tmp_path, "cifar10", files))
    assert CALLS == []
    with pytest.raises(ValueError, match="refusing to unpickle global os.system"):
        safe_pickle.loads(b"cos\nsystem\n(S'echo unsafe'\ntR.", "evil.pkl")


def test_safe_pickle_plain_data_round_trip():
    value = {b"k": [1, 2.5, "s", b"b", None, True, (1, 2)], "arr": np.arange(6, dtype=np.int64).reshape(2, 3)}
    for protocol in (2, 4):
        out = safe_pickle.loads(pickle.dumps(value, protocol=protocol))
        assert out[b"k"] == value[b"k"]
        np.testing.assert_array_equal(out["arr"], value["arr"])


# --- digits -----------------------------------------------------------------------------------------

def test_digits_split_is_fixed_balanced_and_upscaled():
    data = load_dataset("digits")
    assert (len(data.train), len(data.test), data.num_classes) == (1442, 355, 10)
    assert data.train.images.shape[1:] == (1, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.labels.bincount().min() >= 34 and data.train.labels.bincount().min() >= 140
    assert data.train.images.max() > 200  # full 0..255 range, like CIFAR
    again = load_dataset("digits")
    assert torch.equal(again.test.images, data.test.images) and torch.equal(again.train.labels, data.train.labels)
    small = load_dataset("digits", digits_size=16)
    assert small.train.images.shape[1:] == (1, 16, 16)
    with pytest.raises(ValueError, match="digits_size"):
        load_dataset("digits", digits_size=4)


# --- loader and augmentation -------------------------------------------------------------------------

def test_random_crop_takes_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):
        found = [(t, l) for t in range(5) for l in range(5) if torch.equal(cropped[i], padded[i, :, t:t + 8, l:l + 8])]
        assert found, f"image {i} is not a window of its padded image"
        offsets.add(found[0])
    assert len(offsets) > 1


def test_random_hflip_mirrors_about_half():
    images = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    flipped = random_hflip(images, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(flipped, images)]
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_loader_normalises_shuffles_and_repeats_per_generator():
    split = ImageSplit(torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8), torch.arange(10))
    mean, std = channel_stats(split.images)
    values = split.images.double().div(255).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(mean, values.mean(1).float())
    torch.testing.assert_close(std, values.std(1).float())

    plain = BatchLoader(split, 4, mean, std, device="cpu")
    assert len(plain) == 3
    x, y = torch.cat([b[0] for b in plain.batches()]), torch.cat([b[1] for b in plain.batches()])
    assert torch.equal(y, torch.arange(10))
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)

    augmented = BatchLoader(split, 4, mean, std, device="cpu", augmentation=Augmentation(2, True))
    first = [b for b in augmented.batches(torch.Generator().manual_seed(3))]
    second = [b for b in augmented.batches(torch.Generator().manual_seed(3))]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert sorted(torch.cat([b[1] for b in first]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(split, 0, mean, std, device="cpu")
