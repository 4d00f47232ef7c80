"""Run kinds: what one run of an experiment family does, by name.

A sweep expands into tasks ``(kind, config, out)``; an executor calls ``RUNNERS[kind](config, out,
progress)``, which trains (or resumes) one run into its folder ``out`` and returns its result record:
a JSON-friendly dict with at least ``status`` ("finished", "diverged" or "failed"), ``config``,
``seed``, the versions of :func:`widealign.runs.run.environment` and ``epochs`` (a list of
per-epoch dicts). Runners must be resumable: rerun into the same folder, a finished run is returned
unchanged and an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from widealign.runs.config import RunConfig, check_fits, resolve_device
from widealign.runs.run import TENSORBOARD_ENV, train_run
from widealign.studies.alignment import alignment_config, run_alignment
from widealign.studies.song2021 import Song2021Config, run_song2021_task
from widealign.suggest import suggestion

Runner = Callable[[dict[str, Any], Path | None, bool], dict[str, Any]]


def run_training(config: dict[str, Any], out: Path | None, progress: bool) -> dict[str, Any]:
    """The ``train`` kind: one :class:`RunConfig` through :func:`train_run`.

    With ``WIDEALIGN_TENSORBOARD`` set (``widealign run --tensorboard DIR``), the run also writes
    TensorBoard scalars to ``DIR/<run folder name>``.
    """
    board = os.environ.get(TENSORBOARD_ENV)
    tensorboard = os.path.join(board, out.name) if board and out is not None else None
    return train_run(RunConfig(**config), out, progress=progress, tensorboard=tensorboard)


def check_keys(config: dict[str, Any], cls: type) -> None:
    """Raise ValueError naming any key of ``config`` that the dataclass ``cls`` does not have."""
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(config) - fields)
    if unknown:
        known = ", ".join(sorted(fields))
        hint = suggestion(unknown[0], sorted(fields))
        hint = f" ({hint})" if hint else ""
        raise ValueError(f"unknown configuration key(s) {', '.join(unknown)}{hint}; known: {known}")


def check_training(config: dict[str, Any]) -> None:
    """Raise ValueError if ``config`` is not a valid :class:`RunConfig`."""
    check_keys(config, RunConfig)
    RunConfig(**config).resolved()


def check_song2021(config: dict[str, Any]) -> None:
    """Raise ValueError if ``config`` is not a valid :class:`Song2021Config`."""
    check_keys(config, Song2021Config)
    Song2021Config(**config)


RUNNERS: dict[str, Runner] = {
    "train": run_training,
    "alignment": run_alignment,
    "song2021": run_song2021_task,
}
#: Checks a configuration before any run starts, so a typo fails the sweep at once, not hours later.
VALIDATORS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "train": check_training,
    "alignment": alignment_config,
    "song2021": check_song2021,
}


def validate(task: Any) -> None:
    """Check that ``task`` has a known kind and a valid configuration (ValueError otherwise)."""
    if task.kind not in RUNNERS:
        raise ValueError(f"run kind {task.kind!r} is not available; known: {', '.join(RUNNERS)}")
    check = VALIDATORS.get(task.kind)
    if check is not None:
        check(task.config)


def check_here(task: Any) -> None:
    """Check that ``task`` can run on this machine: its device exists and its parameters fit.

    For sweeps whose runs all execute here (the sequential and process executors), so that a
    missing GPU or an impossible width stops the sweep before its first run.
    """
    if task.kind == "train":
        cfg = RunConfig(**task.config).resolved()
    elif task.kind == "alignment":
        cfg = alignment_config(task.config)
    else:
        return
    check_fits(cfg, resolve_device(cfg.device))
