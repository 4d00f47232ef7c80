"""Gather every ``result.json`` under a folder into flat rows, and write them as ``results.csv``.

One row per run: where it lives (``path``, relative to the folder searched), ``kind`` (``train``
unless the record says otherwise), ``status``, ``error``, ``seed``, every config field (the
``extra`` dict's keys, e.g. an alignment run's ``mode``, as columns of their own; lists as JSON
text), the versions and hardware (``run_device`` is the device the run used), and summaries of
its epochs: ``n_epochs``, ``final_`` and ``best_`` train/test loss and accuracy (best ignores
non-finite values; ``train_loss`` is the running mean of the pre-update batch losses of an epoch),
the same for ``train_eval_loss``/``train_eval_acc`` where the run re-evaluated its whole training
set after every epoch (``best_train_eval_loss`` is the paper's "best train loss" of the Add task),
``seconds_per_epoch`` (mean) and ``wall_seconds``. Every other per-epoch key
of the last epoch (``align/0``, ``cos_bp/1``, ``theory_test_loss``, ...) is copied as is, and each
per-layer family ``name/i`` also gets ``name/mean``, its mean over layers.

Keys starting with an underscore are for the figures, not the table: ``_config`` (the flattened
config, to tell which settings vary), ``_epochs`` (the per-epoch records, for curves) and
``_record`` (the whole record, for kinds with figures of their own such as ``song2021``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from widealign.runs.run import RESULT_FILE, read_result_file
from widealign.storage import write_text_atomic

TABLE_FILE = "results.csv"
EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
#: Per-epoch metrics summarised as ``final_<name>`` and ``best_<name>`` (when a run records them).
OPTIONAL_METRICS = (("train_eval_loss", min), ("train_eval_acc", max))
ENVIRONMENT_FIELDS = {
    "widealign_version": "widealign_version",
    "torch_version": "torch_version",
    "python_version": "python_version",
    "device": "run_device",
    "device_name": "device_name",
}
LAYER_KEY = re.compile(r"^(?P<name>.+)/(?P<index>\d+|mean)$")


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "extra" and isinstance(value, dict):
            for k, v in value.items():
                flat[k if k not in config else f"extra.{k}"] = v
        else:
            flat[key] = value
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flat.items()}


def _summaries(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"n_epochs": len(epochs)}
    for split in ("train", "test"):
        for metric, best in (("loss", min), ("acc", max)):
            values = [e.get(f"{split}_{metric}") for e in epochs]
            good = [v for v in map(finite, values) if v is not None]
            row[f"final_{split}_{metric}"] = values[-1] if values else None
            row[f"best_{split}_{metric}"] = best(good) if good else None
    for name, best in OPTIONAL_METRICS:
        values = [e.get(name) for e in epochs]
        good = [v for v in map(finite, values) if v is not None]
        if good:
            row[f"final_{name}"], row[f"best_{name}"] = values[-1], best(good)
    seconds = [v for v in (finite(e.get("seconds")) for e in epochs) if v is not None]
    row["seconds_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
    return row


def _last_epoch_extras(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    skip = set(EPOCH_FIELDS) | {name for name, _ in OPTIONAL_METRICS}
    last = {k: v for k, v in (epochs[-1] if epochs else {}).items() if k not in skip}
    layers: dict[str, list[float]] = {}
    for key, value in last.items():
        match = LAYER_KEY.match(key)
        if match and match["index"] != "mean" and finite(value) is not None:
            layers.setdefault(match["name"], []).append(float(value))
    means = {f"{name}/mean": sum(vs) / len(vs) for name, vs in layers.items()}
    return last | means


def record_row(record: dict[str, Any], path: str = "") -> dict[str, Any]:
    """One result record (as ``result.json`` holds it) flattened into a row (see the module doc)."""
    config = _flat_config(record.get("config") or {})
    epochs = list(record.get("epochs") or [])
    row: dict[str, Any] = {
        "path": path,
        "kind": record.get("kind", "train"),
        "status": record.get("status"),
        "error": record.get("error"),
        "seed": record.get("seed", config.get("seed")),
    }
    row |= {k: v for k, v in config.items() if k not in row}
    row |= {column: record.get(key) for key, column in ENVIRONMENT_FIELDS.items()}
    row |= _summaries(epochs)
    row["wall_seconds"] = record.get("wall_seconds")
    row |= _last_epoch_extras(epochs)
    row["_config"], row["_epochs"], row["_record"] = config, epochs, record
    return row


def collect(results_dir: str | os.PathLike, runs: Collection[str] | None = None) -> list[dict[str, Any]]:
    """Rows for every ``result.json`` found (recursively) under ``results_dir``, in path order.

    ``runs``, if given, keeps only the run folders (paths relative to ``results_dir``) it names.
    A file that is not a result record (unreadable, not JSON, ``{}``, ``[]``, ``NaN``, ...) becomes
    a row with ``status: "unreadable"`` and the reason in ``error``, so one damaged run never hides
    the others.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ValueError(f"results folder {str(root)!r} does not exist")
    rows = []
    files, unlisted = result_files(root)
    for folder, reason in unlisted:
        name = folder.relative_to(root).as_posix()
        rows.append(record_row({"status": "unreadable", "error": f"cannot list {folder}: {reason}"}, name))
    for file in files:
        folder = file.parent.relative_to(root).as_posix()
        if runs is not None and folder not in runs:
            continue
        try:
            record = read_result_file(file)
        except ValueError as err:
            rows.append(record_row({"status": "unreadable", "error": str(err)}, folder))
            continue
        rows.append(record_row(record, folder))
    return rows


def result_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every ``result.json`` under ``root`` (sorted), and the folders that could not be listed with why.

    ``Path.rglob`` skips a folder it cannot list without a word; this walk reports it instead.
    """
    files: list[Path] = []
    unlisted: list[tuple[Path, str]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                found = list(entries)
        except OSError as err:
            unlisted.append((folder, err.strerror or str(err)))
            continue
        for entry in found:
            if entry.name == RESULT_FILE and entry.is_file():
                files.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
    return sorted(files), sorted(unlisted)


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Columns in first-seen order, per-layer families last and sorted (``name/0``, ..., ``name/mean``)."""
    plain: list[str] = []
    layered: dict[str, list[str]] = {}
    for key in dict.fromkeys(k for row in rows for k in row if not k.startswith("_")):
        match = LAYER_KEY.match(key)
        if match:
            layered.setdefault(match["name"], []).append(key)
        else:
            plain.append(key)

    def order(key: str) -> tuple[int, int]:
        index = LAYER_KEY.match(key)["index"]
        return (1, 0) if index == "mean" else (0, int(index))

    return plain + [k for keys in layered.values() for k in sorted(keys, key=order)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_table(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> Path:
    """Write ``results.csv`` in ``out_dir``: one header row, one row per run, empty cells for None."""
    path = Path(out_dir) / TABLE_FILE
    columns = table_columns(rows)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    write_text_atomic(text.getvalue(), path)
    return path


def status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many runs have each status (finished, diverged, running, failed, unreadable)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["status"])] = counts.get(str(row["status"]), 0) + 1
    return counts
