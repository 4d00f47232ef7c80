"""MNIST, KMNIST and CIFAR-10 through torchvision's dataset classes, split as the paper does.

Files are read from ``data_dir`` (default: :func:`default_data_dir`) in torchvision's layouts:

- MNIST, KMNIST: ``<data_dir>/MNIST/raw/`` (``KMNIST/raw/``) holding ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, either raw
  or gzip'd as distributed (``*.gz``, decompressed next to themselves on first use).
- CIFAR-10: ``<data_dir>/cifar-10-batches-py/`` (``data_batch_1`` ... ``data_batch_5``,
  ``test_batch``, ``batches.meta``), or the archive ``<data_dir>/cifar-10-python.tar.gz`` (extracted
  on first use). torchvision checks every file against its published md5.

Nothing is fetched unless ``download=True``, so an offline run fails at once with a one-line
``ValueError`` naming the folder searched instead of hanging on the network.

The split, as the authors' loaders make it (docs/method.md): the FIRST ``holdout`` (5,000)
examples of the official training set are held out for evaluation and the rest (55,000
MNIST/KMNIST, 45,000 CIFAR-10) are trained on, in file order, so ``subset(n)`` ("the first n
training examples") gives the paper's low-data sets. A smaller file in the same format works with a
smaller ``holdout``. ``official_test=True`` evaluates on the official 10,000-image test set instead;
the training set stays the same (pass ``holdout=0`` as well to train on every training image).
Pixels are scaled to [0, 1] and shaped (N, C, H, W); targets are one-hot minus 0.1.
"""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from torch import Tensor
from torchvision import datasets

from widealign.data.base import Dataset, shifted_one_hot
from widealign.storage import WriteError, atomic_write

#: Training examples held out for evaluation, from the start of the training set (the paper's 5k).
HOLDOUT = 5000

#: Environment variable naming the folder data sets are read from (and downloaded to).
DATA_DIR_ENV = "WIDEALIGN_DATA_DIR"

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_READ_ERRORS = (
    RuntimeError, ValueError, TypeError, AssertionError, OSError, EOFError, KeyError, IndexError,
    pickle.UnpicklingError, tarfile.TarError,
)  # fmt: skip


def default_data_dir() -> Path:
    """``$WIDEALIGN_DATA_DIR`` if set, else ``./data``: where data sets live unless told otherwise."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` as a path, or :func:`default_data_dir` when it is None."""
    return Path(data_dir) if data_dir is not None else default_data_dir()


def one_line(err: BaseException) -> str:
    """An exception's message on a single line (torchvision's messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


@dataclass(frozen=True)
class _Source:
    """One torchvision data set: its class, where its files live and how to describe them."""

    name: str
    title: str
    cls: type[datasets.VisionDataset]
    folder: str
    files: tuple[str, ...]
    shape: tuple[int, int, int]
    hint: str  # how to place the files by hand; formatted with ``root`` and ``folder``


SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        "mnist", "MNIST", datasets.MNIST, "MNIST/raw", _IDX_FILES, (1, 28, 28),
        "place the four idx files (raw or .gz as distributed) in {folder}",
    ),
    "kmnist": _Source(
        "kmnist", "KMNIST", datasets.KMNIST, "KMNIST/raw", _IDX_FILES, (1, 28, 28),
        "place the four idx files (raw or .gz as distributed) in {folder}",
    ),
    "cifar10": _Source(
        "cifar10", "CIFAR-10", datasets.CIFAR10, "cifar-10-batches-py", _CIFAR_FILES, (3, 32, 32),
        f"place {_CIFAR_ARCHIVE} in {{root}} or its extracted batches in {{folder}}",
    ),
}  # fmt: skip


def _gunzip(src: Path, dst: Path) -> None:
    """Decompress ``src`` to ``dst`` through a temporary file: ``dst`` is never half-written, and a
    bad archive or a full disk leaves no temporary file behind."""

    def unpack(out: IO[bytes]) -> None:
        with gzip.open(src, "rb") as fin:
            shutil.copyfileobj(fin, out)

    atomic_write(dst, unpack)


def _unpack_local(source: _Source, root: Path) -> None:
    """Unpack archives already on disk (the distributed ``.gz`` idx files, the CIFAR tarball)."""
    folder = root / source.folder
    if source.name == "cifar10":
        archive = root / _CIFAR_ARCHIVE
        if not folder.is_dir() and archive.is_file():
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(root, filter="data")
        return
    for name in source.files:
        packed = folder / f"{name}.gz"
        if not (folder / name).is_file() and packed.is_file():
            _gunzip(packed, folder / name)


def _files(source: _Source, root: Path) -> set[Path]:
    """The files a download of ``source`` writes to: its folder's, and the CIFAR archive."""
    folder = root / source.folder
    found = {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()
    archive = root / _CIFAR_ARCHIVE
    return found | ({archive} if source.name == "cifar10" and archive.is_file() else set())


def _missing(source: _Source, root: Path) -> list[str]:
    return [f for f in source.files if not (root / source.folder / f).is_file()]


def _not_found(source: _Source, root: Path, missing: list[str], reason: str = "") -> ValueError:
    folder = root / source.folder
    why = f" ({reason})" if reason else ""
    return ValueError(
        f"{source.title} not found in {folder}: missing {', '.join(missing)}{why}; pass --download "
        f"(download=True) to fetch it, or {source.hint.format(root=root, folder=folder)}"
    )


def _corrupt(source: _Source, root: Path, err: BaseException) -> ValueError:
    folder = root / source.folder
    return ValueError(
        f"{source.title} files in {folder} are corrupt or incomplete ({one_line(err)}); delete them "
        f"and pass --download (download=True), or place intact copies there"
    )


def read_split(source: _Source, root: Path, train: bool, download: bool = False) -> tuple[Tensor, Tensor]:
    """Images (N, C, H, W) as uint8 and integer labels of one official split, read by torchvision.

    Missing files are fetched only when ``download`` is true; missing or corrupt files otherwise
    raise a one-line ``ValueError`` that names the folder and says how to get them.
    """
    try:
        _unpack_local(source, root)
    except WriteError:
        raise
    except _READ_ERRORS as err:
        raise _corrupt(source, root, err) from err
    missing = _missing(source, root)
    if missing and not download:
        raise _not_found(source, root, missing)
    before = _files(source, root)
    try:
        ds = source.cls(str(root), train=train, download=download)
        images = torch.as_tensor(np.asarray(ds.data))
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    except _READ_ERRORS as err:
        if missing:  # a failed download: remove what it wrote (a bad .gz, half an unpacked file)
            for path in _files(source, root) - before:
                path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise WriteError(
                err.errno, f"no space left on device while writing {root / source.folder}"
            ) from err
        missing = _missing(source, root)
        if missing:
            raise _not_found(source, root, missing, f"download failed: {one_line(err)}") from err
        raise _corrupt(source, root, err) from err
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    if tuple(images.shape[1:]) != source.shape or len(images) != len(labels) or len(labels) == 0:
        problem = ValueError(f"read {tuple(images.shape)} images and {len(labels)} labels")
        raise _corrupt(source, root, problem)
    if labels.min() < 0 or labels.max() >= 10:
        raise _corrupt(
            source, root, ValueError(f"labels outside 0..9: {int(labels.min())}..{int(labels.max())}")
        )
    return images.contiguous(), labels


def _pixels(images: Tensor) -> Tensor:
    return images.to(torch.float32).div_(255.0)


def load_torchvision_set(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    official_test: bool = False,
    holdout: int | None = None,
) -> Dataset:
    """MNIST, KMNIST or CIFAR-10 (``name``: mnist, kmnist, cifar10) split as the paper does.

    Args:
        data_dir: folder holding the files (see the module docstring); default :func:`default_data_dir`.
        download: fetch missing files with torchvision (never done otherwise).
        official_test: evaluate on the official test set instead of the held-out training images.
        holdout: training examples held out from the start of the training set (default
            :data:`HOLDOUT`); 0 trains on all of them (only with ``official_test``).
    """
    if name not in SOURCES:
        raise ValueError(f"unknown torchvision data set {name!r}; choose one of {', '.join(SOURCES)}")
    source, root = SOURCES[name], resolve_data_dir(data_dir)
    holdout = HOLDOUT if holdout is None else holdout
    images, labels = read_split(source, root, train=True, download=download)
    if not isinstance(holdout, int) or not 0 <= holdout < len(images) or (holdout == 0 and not official_test):
        raise ValueError(
            f"{source.title}: cannot hold out {holdout} of its {len(images)} training images "
            f"(need 0 < holdout < {len(images)}, or holdout 0 with official_test; set it with --holdout)"
        )
    if official_test:
        test_images, test_labels = read_split(source, root, train=False)
    else:
        test_images, test_labels = images[:holdout], labels[:holdout]
    return Dataset(
        name=name,
        x_train=_pixels(images[holdout:]),
        y_train=shifted_one_hot(labels[holdout:], 10),
        x_test=_pixels(test_images),
        y_test=shifted_one_hot(test_labels, 10),
        task="classification",
        num_classes=10,
    )


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    official_test: bool = False,
    holdout: int | None = None,
) -> Dataset:
    """MNIST: 55,000 training and 5,000 held-out images (the first 5k of the training set)."""
    return load_torchvision_set("mnist", data_dir, download, official_test, holdout)


def load_kmnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    official_test: bool = False,
    holdout: int | None = None,
) -> Dataset:
    """KMNIST (Kuzushiji-MNIST): 55,000 training and 5,000 held-out images (the first 5k)."""
    return load_torchvision_set("kmnist", data_dir, download, official_test, holdout)


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    official_test: bool = False,
    holdout: int | None = None,
) -> Dataset:
    """CIFAR-10: 45,000 training and 5,000 held-out images (the first 5k of the training batches)."""
    return load_torchvision_set("cifar10", data_dir, download, official_test, holdout)
