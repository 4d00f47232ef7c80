"""Per-epoch metrics outside ``result.json``: a CSV table and, optionally, TensorBoard scalars.

``metrics.csv`` has one row per epoch and one column per metric, in order of first appearance;
a metric that holds a list (one value per layer, say) becomes the columns ``name_0``, ``name_1``, ...,
a dict becomes ``name.key``, and anything deeper is written as JSON. The file is rewritten whole
from the run's history (atomically), so a resumed run's table has every epoch exactly once.

:class:`TensorBoardLogger` writes every numeric metric of an epoch as a scalar (tag = column name,
step = epoch) through ``torch.utils.tensorboard``; it needs the ``tensorboard`` extra
(``pip install -e '.[tensorboard]'`` in a source checkout). Each session logs the epochs it trains.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.csv"


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One epoch's record as flat ``column -> scalar`` pairs (see the module docstring)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, list) and all(not isinstance(v, (list, dict)) for v in value):
            flat |= {f"{key}_{i}": v for i, v in enumerate(value)}
        elif isinstance(value, dict) and all(not isinstance(v, (list, dict)) for v in value.values()):
            flat |= {f"{key}.{k}": v for k, v in value.items()}
        elif isinstance(value, (list, dict)):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


def metrics_table(epochs: Iterable[Mapping[str, Any]]) -> str:
    """The CSV text of ``epochs`` (one row each; empty cells where an epoch lacks a column)."""
    rows = [flatten(r) for r in epochs]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def write_metrics_csv(epochs: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write :func:`metrics_table` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(metrics_table(epochs))
    os.replace(tmp, path)


class TensorBoardLogger:
    """Writes each epoch's numeric metrics as TensorBoard scalars into ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError(
                "TensorBoard logging needs the tensorboard package: pip install -e '.[tensorboard]' "
                "in the widealign checkout (or pip install tensorboard)"
            ) from err
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, record: Mapping[str, Any]) -> None:
        """Add every finite number of ``record`` (an epoch's metrics) at step ``record['epoch']``."""
        step = int(record["epoch"])
        for tag, value in flatten(record).items():
            if tag == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
