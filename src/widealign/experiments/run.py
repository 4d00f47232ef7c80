"""One training run from a :class:`RunConfig`, with a results file and exact resumption.

With an output folder, a run writes ``result.json`` (atomically, after every epoch) holding the
resolved configuration, library and torch versions, seed, device and per-epoch records, and
``checkpoint.pt`` after every epoch. Running the same configuration into the same folder again
returns the finished result without training, or resumes an interrupted run from its last
completed epoch, giving the numbers an uninterrupted run would have given.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import widealign
from widealign.data import Dataset, load_dataset
from widealign.experiments.config import RunConfig, build_model, build_optimizer, resolve_device
from widealign.rules import make_rule
from widealign.train import DivergedError, EpochRecord, Trainer

RESULT_FILE = "result.json"
DATA_DIR_ENV, DOWNLOAD_ENV = "WIDEALIGN_DATA_DIR", "WIDEALIGN_DOWNLOAD"
CHECKPOINT_FILE = "checkpoint.pt"


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware recorded next to every number."""
    return {
        "widealign_version": widealign.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
    }


def new_record(kind: str, config: dict[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """The result record of a run that is starting: kind, configuration, seed, versions, device."""
    return {
        "kind": kind,
        "status": "running",
        "config": config,
        "seed": seed,
        **environment(device),
        "epochs": [],
        "wall_seconds": 0.0,
        "error": None,
    }


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON to a temporary file and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def read_result(out: str | os.PathLike) -> dict[str, Any] | None:
    """The result record in folder ``out``, or None if there is none."""
    path = Path(out) / RESULT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def check_writable(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and make sure files can be written there (a clear error if not)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write to output folder {str(out)!r}: {err.strerror or err}") from err
    return out


def load_data(cfg: RunConfig) -> Dataset:
    """The configured data set, held-out split and training subset.

    Where data files live is the environment's business, not the configuration's (results stay
    comparable across machines): ``WIDEALIGN_DATA_DIR`` names the folder and ``WIDEALIGN_DOWNLOAD=1``
    allows downloading, which the CLI's ``--data-dir`` and ``--download`` set.
    """
    data = load_dataset(
        cfg.dataset,
        data_dir=os.environ.get(DATA_DIR_ENV) or None,
        download=os.environ.get(DOWNLOAD_ENV) == "1",
        official_test=cfg.official_test,
        holdout=cfg.holdout,
    )
    return data if cfg.train_size is None else data.subset(cfg.train_size)


def previous_result(out: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The ended (finished or diverged) run in ``out``, if any; a different configuration is an error."""
    previous = read_result(out)
    if previous is not None and previous["config"] != json.loads(json.dumps(config)):
        raise ValueError(f"{out} holds a run with a different configuration; choose another output folder")
    return previous if previous is not None and previous["status"] in ("finished", "diverged") else None


def train_run(
    cfg: RunConfig,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    epoch_metrics: list[Callable[[Trainer], dict[str, Any]]] | None = None,
    kind: str = "train",
) -> dict[str, Any]:
    """Train one configuration and return its result record (see the module docstring).

    A diverging run is recorded with ``status: "diverged"`` and its message, not raised, so that
    sweeps go on; callers that want an error check ``status``. ``epoch_metrics`` add diagnostics to
    every epoch's record; ``kind`` names the run kind in the record.
    """
    cfg = cfg.resolved()
    if out is not None:
        out = check_writable(out)
        previous = previous_result(out, cfg.as_dict())
        if previous is not None:
            return previous
    device = resolve_device(cfg.device)
    data = load_data(cfg).to(device, cfg.torch_dtype)
    model = build_model(cfg, data).to(device, cfg.torch_dtype)
    rule = make_rule(cfg.rule, model, cfg.loss_name(data), seed=cfg.seed, variant=cfg.rule_variant)
    optimizer = build_optimizer(cfg, model.parameters())
    trainer = Trainer(
        model, rule, optimizer, data, cfg.batch_size, seed=cfg.seed,
        checkpoint=None if out is None else out / CHECKPOINT_FILE,
        epoch_metrics=epoch_metrics, progress=progress, eval_train=cfg.eval_train,
    )  # fmt: skip
    record = new_record(kind, cfg.as_dict(), cfg.seed, device)
    start = time.perf_counter()

    def save(epoch_record: EpochRecord | None = None) -> None:
        record["epochs"] = [r.as_dict() for r in trainer.history]
        record["wall_seconds"] = sum(r.seconds for r in trainer.history)
        if out is not None:
            write_json_atomic(record, out / RESULT_FILE)
        if epoch_record is not None and on_epoch is not None:
            on_epoch(epoch_record)

    try:
        trainer.fit(cfg.epochs, on_epoch=save)
        record["status"] = "finished"
    except DivergedError as err:
        record["status"], record["error"] = "diverged", str(err)
    record["resumed_from_epoch"] = trainer.resumed_from
    record["session_seconds"] = time.perf_counter() - start
    save()
    return record
