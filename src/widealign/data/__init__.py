"""Data sets as in-memory tensors, by name."""

from __future__ import annotations

from collections.abc import Callable

from widealign.data.add_task import add_targets, make_add_task
from widealign.data.base import Dataset, batches, shifted_one_hot
from widealign.data.digits import load_digits

#: Loaders of the data sets that need no download, by name.
DATASETS: dict[str, Callable[[], Dataset]] = {"digits": load_digits, "add": make_add_task}


def load_dataset(name: str) -> Dataset:
    """The data set called ``name``; an unknown name lists the known ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]()


__all__ = [
    "DATASETS",
    "Dataset",
    "add_targets",
    "batches",
    "load_dataset",
    "load_digits",
    "make_add_task",
    "shifted_one_hot",
]
