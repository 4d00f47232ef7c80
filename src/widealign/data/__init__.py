"""Data sets by name: in-memory tensors (digits, add, mnist, kmnist, cifar10) or streamed (imagenet).

Files are read from ``data_dir``, by default ``$WIDEALIGN_DATA_DIR`` or ``./data``; nothing is
downloaded unless ``download=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from widealign.data.add_task import add_targets, make_add_task
from widealign.data.base import Dataset, batches, eval_order, shifted_one_hot
from widealign.data.digits import load_digits
from widealign.data.imagenet import (
    ImageFolderDataset,
    build_imagenet_smoke,
    load_image_folders,
    load_imagenet,
    load_imagenet_smoke,
)
from widealign.data.shapes import DATA_SHAPES, DataShape
from widealign.data.torchvision_sets import (
    HOLDOUT,
    default_data_dir,
    load_cifar10,
    load_kmnist,
    load_mnist,
    load_torchvision_set,
)
from widealign.suggest import did_you_mean

#: What a loader returns: tensors in memory, or (ImageNet) image folders streamed in batches.
AnyDataset = Dataset | ImageFolderDataset


def _bundled(name: str, make: Callable[[], Dataset]) -> Callable[..., Dataset]:
    """A loader of bundled data: it needs no files and has no official test set to switch to."""

    def load(
        data_dir: str | os.PathLike | None = None, download: bool = False, official_test: bool = False
    ) -> Dataset:
        if official_test:
            raise ValueError(
                f"{name} has no official test set (official_test applies to mnist, kmnist, cifar10)"
            )
        return make()

    load.__doc__ = make.__doc__
    return load


#: Loaders by name, all called as ``loader(data_dir=None, download=False, official_test=False)``;
#: those of :data:`HOLDOUT_SETS` also take ``holdout``.
DATASETS: dict[str, Callable[..., AnyDataset]] = {
    "digits": _bundled("digits", load_digits),
    "add": _bundled("add", make_add_task),
    "mnist": load_mnist,
    "kmnist": load_kmnist,
    "cifar10": load_cifar10,
    "imagenet": load_imagenet,
    "imagenet-smoke": load_imagenet_smoke,
}


#: Data sets whose held-out images are the first ``holdout`` of the training files.
HOLDOUT_SETS = ("mnist", "kmnist", "cifar10")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    official_test: bool = False,
    holdout: int | None = None,
) -> AnyDataset:
    """The data set called ``name``; an unknown name lists the known ones.

    Args:
        data_dir: folder holding the files (default ``$WIDEALIGN_DATA_DIR`` or ``./data``).
        download: fetch missing files (MNIST, KMNIST, CIFAR-10); never done otherwise.
        official_test: evaluate on the official test set instead of the first 5k training images.
        holdout: training images held out for evaluation (default :data:`HOLDOUT`, the paper's
            5,000); only for the sets of :data:`HOLDOUT_SETS`.
    """
    if name not in DATASETS:
        raise ValueError(did_you_mean("dataset", name, DATASETS))
    if holdout is None:
        return DATASETS[name](data_dir=data_dir, download=download, official_test=official_test)
    if name not in HOLDOUT_SETS:
        raise ValueError(f"holdout applies to {', '.join(HOLDOUT_SETS)}, not {name}")
    return DATASETS[name](data_dir=data_dir, download=download, official_test=official_test, holdout=holdout)


__all__ = [
    "DATA_SHAPES",
    "DataShape",
    "DATASETS",
    "HOLDOUT",
    "HOLDOUT_SETS",
    "AnyDataset",
    "Dataset",
    "ImageFolderDataset",
    "add_targets",
    "batches",
    "build_imagenet_smoke",
    "default_data_dir",
    "eval_order",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_image_folders",
    "load_imagenet",
    "load_imagenet_smoke",
    "load_kmnist",
    "load_mnist",
    "load_torchvision_set",
    "make_add_task",
    "shifted_one_hot",
]
