"""MNIST, KMNIST and CIFAR-10 read from tiny files in their real on-disk formats (no download)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from widealign.data import DATA_SHAPES, load_dataset, load_torchvision_set
from widealign.data import torchvision_sets as tvs

N_TRAIN, N_TEST = 30, 10


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file (uint8, big-endian dimensions) as LeCun's MNIST files are written."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_arrays(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is ``offset + i`` (so each one is recognisable) and labels i % 10."""
    images = np.broadcast_to((offset + np.arange(n, dtype=np.uint8))[:, None, None], (n, 28, 28))
    return images, np.arange(n) % 10


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = False) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 200)):
        images, labels = mnist_arrays(n, offset)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = raw / f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(f"{name}.gz", "wb") as f:
                    f.write(data)
            else:
                name.write_bytes(data)
    return raw


def cifar_batch(n: int, offset: int) -> dict:
    """A CIFAR python batch: rows of 3072 bytes (red plane, green plane, blue plane, each 32x32)."""
    value = offset + np.arange(n, dtype=np.uint8)
    planes = [np.repeat(value[:, None], 1024, 1) + c for c in (0, 1, 2)]
    return {
        "batch_label": "tiny",
        "labels": [int(v) % 10 for v in value],
        "data": np.concatenate(planes, 1).astype(np.uint8),
        "filenames": [f"{i}.png" for i in range(n)],
    }


def write_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per_batch = N_TRAIN // 5
    for b in range(5):
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(cifar_batch(per_batch, b * per_batch), f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(cifar_batch(N_TEST, 150), f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, f, protocol=2)
    return folder


@pytest.fixture
def no_md5(monkeypatch):
    """Let tiny CIFAR files pass torchvision's md5 check (they cannot match the real checksums)."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath)
    )


@pytest.fixture
def small_holdout(monkeypatch):
    monkeypatch.setattr(tvs, "HOLDOUT", 5)


def assert_papers_format(d, shape: tuple[int, ...]) -> None:
    assert d.input_shape == shape and d.x_train.dtype == torch.float32
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1 and 0 <= d.x_test.min() and d.x_test.max() <= 1
    for y in (d.y_train, d.y_test):
        torch.testing.assert_close(y, torch.nn.functional.one_hot(y.argmax(1), 10).float() - 0.1)
    assert d.task == "classification" and d.num_outputs == 10 and d.default_loss == "mse"


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("kmnist", "KMNIST")])
def test_mnist_family_holds_out_the_first_k_training_images(tmp_path, name, folder):
    """As the authors' loaders: ``train_data[:5000]`` is held out, the rest is trained on."""
    write_mnist(tmp_path, folder)
    d = load_torchvision_set(name, tmp_path, holdout=5)
    assert_papers_format(d, (1, 28, 28))
    assert (d.n_train, d.n_test) == (N_TRAIN - 5, 5)
    torch.testing.assert_close(d.x_test[:, 0, 0, 0] * 255, torch.arange(5.0))
    torch.testing.assert_close(d.x_train[:, 0, 3, 7] * 255, torch.arange(5.0, 30.0))
    assert d.y_train.argmax(1).tolist() == [i % 10 for i in range(5, 30)]
    low = d.subset(4)  # the paper's "first N training examples": the first N after the held-out ones
    torch.testing.assert_close(low.x_train[:, 0, 0, 0] * 255, torch.arange(5.0, 9.0))
    assert torch.equal(low.x_test, d.x_test)


def test_a_smaller_file_in_the_same_format_works_with_a_smaller_holdout(tmp_path, monkeypatch):
    """1,497 KMNIST-format images: the default 5,000 cannot be held out; --holdout makes it usable."""
    monkeypatch.setattr(sys.modules[__name__], "N_TRAIN", 1497)
    write_mnist(tmp_path, "KMNIST")
    with pytest.raises(ValueError, match="cannot hold out 5000 of its 1497 .*--holdout"):
        load_dataset("kmnist", data_dir=tmp_path)
    d = load_dataset("kmnist", data_dir=tmp_path, holdout=300)
    assert (d.n_train, d.n_test) == (1197, 300)
    torch.testing.assert_close(d.x_test[:, 0, 0, 0] * 255, (torch.arange(300.0) % 256))
    with pytest.raises(ValueError, match="holdout applies to mnist, kmnist, cifar10"):
        load_dataset("digits", holdout=300)
    assert DATA_SHAPES["kmnist"].sizes(holdout=300) == (60_000 - 300, 300)
    assert DATA_SHAPES["kmnist"].sizes(train_size=45, holdout=300) == (45, 300)


def test_distributed_gz_files_are_decompressed_and_read(tmp_path, small_holdout):
    raw = write_mnist(tmp_path, "KMNIST", gz=True)
    d = load_dataset("kmnist", data_dir=tmp_path)
    assert (d.n_train, d.n_test) == (N_TRAIN - 5, 5)
    assert (raw / "train-images-idx3-ubyte").is_file() and (raw / "train-images-idx3-ubyte.gz").is_file()


def test_cifar10_pixels_keep_the_channel_planes_and_split(tmp_path, no_md5):
    write_cifar(tmp_path)
    d = load_torchvision_set("cifar10", tmp_path, holdout=6)
    assert_papers_format(d, (3, 32, 32))
    assert (d.n_train, d.n_test) == (24, 6)
    pixels = torch.arange(30.0)[:, None] + torch.tensor([0.0, 1, 2])
    torch.testing.assert_close(d.x_test[:, :, 31, 0] * 255, pixels[:6])
    torch.testing.assert_close(d.x_train[:, :, 5, 9] * 255, pixels[6:])


def test_official_test_option_evaluates_on_the_test_files(tmp_path, no_md5, small_holdout):
    write_cifar(tmp_path)
    d = load_dataset("cifar10", data_dir=tmp_path, official_test=True)
    assert (d.n_train, d.n_test) == (N_TRAIN - 5, N_TEST)
    torch.testing.assert_close(d.x_test[:, 0, 0, 0] * 255, 150 + torch.arange(10.0))
    full = load_torchvision_set("cifar10", tmp_path, official_test=True, holdout=0)
    assert full.n_train == N_TRAIN
    with pytest.raises(ValueError, match="cannot hold out 0"):
        load_torchvision_set("cifar10", tmp_path, holdout=0)


def test_archive_cifar_tarball_is_extracted_without_download(tmp_path, no_md5, small_holdout):
    write_cifar(tmp_path / "build")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert load_dataset("cifar10", data_dir=tmp_path).n_train == N_TRAIN - 5


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST/raw"), ("kmnist", "KMNIST/raw"), ("cifar10", "")])
def test_missing_data_is_a_one_line_error_naming_the_folder(tmp_path, name, folder):
    with pytest.raises(ValueError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "--download" in message
    assert str(tmp_path / (folder or "cifar-10-batches-py")) in message


def test_default_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEALIGN_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=str(tmp_path / "MNIST" / "raw")):
        load_dataset("mnist")
    monkeypatch.delenv("WIDEALIGN_DATA_DIR")
    assert tvs.default_data_dir() == Path("data")


def test_production_md5_check_rejects_files_that_are_not_the_real_cifar(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(ValueError, match="corrupt") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path / "cifar-10-batches-py") in str(info.value)


def test_truncated_files_are_reported_as_corrupt(tmp_path, no_md5):
    raw = write_mnist(tmp_path)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt or incomplete") as info:
        load_torchvision_set("mnist", tmp_path, holdout=5)
    assert "\n" not in str(info.value)
    batch = write_cifar(tmp_path) / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(ValueError, match="CIFAR-10 files in .* are corrupt"):
        load_torchvision_set("cifar10", tmp_path, holdout=5)


def test_download_only_when_asked_and_failures_are_one_line(tmp_path, monkeypatch):
    calls = []

    def offline(self):
        calls.append(self.root)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(ValueError, match="not found"):
        load_dataset("mnist", data_dir=tmp_path)
    assert calls == []
    with pytest.raises(ValueError, match="download failed: Error downloading") as info:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    assert calls == [str(tmp_path)] and "\n" not in str(info.value)


def test_bundled_sets_still_load_by_name_and_reject_official_test():
    assert load_dataset("digits").n_train == 1437
    assert load_dataset("add").x_train.shape == (300, 100, 1)
    with pytest.raises(ValueError, match="no official test set"):
        load_dataset("digits", official_test=True)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("kmnist", "KMNIST"), ("cifar10", None)])
def test_data_shapes_match_the_loader_on_real_format_files(tmp_path, no_md5, name, folder):
    write_cifar(tmp_path) if folder is None else write_mnist(tmp_path, folder)
    data, shape = load_torchvision_set(name, tmp_path, holdout=5), DATA_SHAPES[name]
    assert shape.input_shape == data.input_shape and shape.num_outputs == data.num_outputs
    assert (shape.task, shape.default_loss) == (data.task, data.default_loss)
    assert shape.target_shape == tuple(data.y_train.shape[1:])
    assert shape.n_test == tvs.HOLDOUT and shape.n_official_test == 10_000


def test_a_bad_gz_file_is_one_line_and_leaves_no_temporary_file(tmp_path):
    raw = write_mnist(tmp_path, gz=True)
    packed = raw / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:-30])
    with pytest.raises(ValueError, match="corrupt or incomplete") as info:
        load_torchvision_set("mnist", tmp_path, holdout=5)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in tvs._IDX_FILES)


def test_a_full_disk_while_unpacking_is_one_line_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from widealign import storage

    raw = write_mnist(tmp_path, gz=True)

    def full(path, mode):
        open(path, mode).close()  # the temporary file exists, as on a real disk, when the write fails
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(storage, "_open", full)
    with pytest.raises(storage.WriteError) as info:
        load_torchvision_set("mnist", tmp_path, holdout=5)
    assert str(info.value) == f"no space left on device while writing {raw / tvs._IDX_FILES[0]}"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{name}.gz" for name in tvs._IDX_FILES)


def test_a_bad_gz_download_leaves_nothing_behind(tmp_path, monkeypatch):
    good = idx_bytes(mnist_arrays(N_TRAIN, 0)[0])

    def bad_download(self):  # what torchvision does, with a download cut short
        os.makedirs(self.raw_folder, exist_ok=True)
        packed = Path(self.raw_folder) / "train-images-idx3-ubyte.gz"
        packed.write_bytes(gzip.compress(good)[:-40])
        torchvision.datasets.utils.extract_archive(str(packed), self.raw_folder)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", bad_download)
    with pytest.raises(ValueError, match="download failed") as info:
        load_dataset("mnist", data_dir=tmp_path, download=True)
    assert "\n" not in str(info.value)
    assert [p for p in (tmp_path / "MNIST").rglob("*") if p.is_file()] == []
