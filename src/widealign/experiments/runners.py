"""Run kinds: what one run of an experiment family does, by name.

A sweep expands into tasks ``(kind, config, out)``; an executor calls ``RUNNERS[kind](config, out,
progress)``, which trains (or resumes) one run into its folder ``out`` and returns its result record:
a JSON-friendly dict with at least ``status`` ("finished", "diverged" or "failed"), ``config``,
``seed``, the versions of :func:`widealign.experiments.run.environment` and ``epochs`` (a list of
per-epoch dicts). Runners must be resumable: rerun into the same folder, a finished run is returned
unchanged and an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from widealign.experiments.alignment import alignment_config, run_alignment
from widealign.experiments.config import RunConfig
from widealign.experiments.run import train_run

Runner = Callable[[dict[str, Any], Path | None, bool], dict[str, Any]]


def run_training(config: dict[str, Any], out: Path | None, progress: bool) -> dict[str, Any]:
    """The ``train`` kind: one :class:`RunConfig` through :func:`train_run`."""
    return train_run(RunConfig(**config), out, progress=progress)


def check_training(config: dict[str, Any]) -> None:
    """Raise ValueError if ``config`` is not a valid :class:`RunConfig`."""
    fields = set(RunConfig.__dataclass_fields__)
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(
            f"unknown configuration key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    RunConfig(**config).resolved()


RUNNERS: dict[str, Runner] = {"train": run_training, "alignment": run_alignment}
#: Checks a configuration before any run starts, so a typo fails the sweep at once, not hours later.
VALIDATORS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "train": check_training,
    "alignment": alignment_config,
}


def validate(task: Any) -> None:
    """Check that ``task`` has a known kind and a valid configuration (ValueError otherwise)."""
    if task.kind not in RUNNERS:
        raise ValueError(f"run kind {task.kind!r} is not available; known: {', '.join(RUNNERS)}")
    check = VALIDATORS.get(task.kind)
    if check is not None:
        check(task.config)
