"""The ``alignment`` run kind: the input-weight alignment score and update alignment while training.

Two modes, chosen by the config key ``mode``:

* ``score`` (docs/method.md#alignment-score): a :class:`~widealign.diagnostics.TheoryPair` (a bp
  network and its "theory" shadow, trained from the same initialisation on the same batches). After
  every epoch it records the bp network's train/held-out loss and accuracy, the theory network's held-out
  loss and accuracy (``theory_test_loss``, ``theory_test_acc``) and, per synaptic layer ``i``,
  ``align/i`` and the shuffled control ``align_shuffled/i``. Noise for epoch ``e`` is drawn from a
  stream derived from ``(seed, e)``, so a resumed run gives the numbers of an uninterrupted one.
* ``update``: trains ``rule`` with :func:`~widealign.runs.run.train_run` and records per
  layer ``cos_bp/i``, ``angle_fb/i`` (fa, align-prop) and ``dist_init/i`` after every epoch,
  measured on a fixed probe batch (the first ``probe_size`` training examples).

Both modes honour ``train_size`` (the first N training examples) through
:func:`~widealign.runs.run.load_data`.

The config is a flat dict: every :class:`RunConfig` field, plus the keys of
:data:`ALIGNMENT_DEFAULTS`, which are stored in ``RunConfig.extra``; the resolved config, written
to ``result.json``, is the ``RunConfig`` dict (so feeding it back gives the same run). Results have
the format of ``train_run`` plus ``"kind": "alignment"``; both modes resume from their checkpoint.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from widealign.data import Dataset
from widealign.diagnostics import TheoryPair, alignment_metrics, update_alignment, weight_snapshot
from widealign.runs.config import RunConfig, build_model, build_optimizer, check_fits, resolve_device
from widealign.runs.run import (
    CHECKPOINT_FILE,
    check_writable,
    load_data,
    new_record,
    previous_result,
    read_checkpoint,
    resume,
    train_run,
    write_result,
)
from widealign.seeding import generator
from widealign.storage import run_lock
from widealign.train import DivergedError, EpochRecord, Trainer, evaluate, save_atomic

KIND = "alignment"
MODES = ("score", "update")
#: Format 2 added the configuration (``config``); format 1 checkpoints are refused.
CHECKPOINT_FORMAT = 2

#: The alignment-specific config keys and their defaults.
ALIGNMENT_DEFAULTS: dict[str, Any] = {
    "mode": "score",
    "probe_size": 100,
    "draws": 100,
    "noise_batch": 100,
}


def alignment_config(config: dict[str, Any]) -> RunConfig:
    """The resolved :class:`RunConfig` of an alignment run, its own keys (with defaults) in ``extra``.

    Unknown keys are an error, so that a typo does not silently run the default.
    """
    config = dict(config)
    run_fields = {f.name for f in fields(RunConfig)}
    extra = dict(config.pop("extra", None) or {})
    extra |= {k: config.pop(k) for k in list(config) if k not in run_fields}
    unknown = sorted(set(extra) - set(ALIGNMENT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown alignment config keys: {', '.join(unknown)}")
    extra = ALIGNMENT_DEFAULTS | extra
    if extra["mode"] not in MODES:
        raise ValueError(f"unknown alignment mode {extra['mode']!r}; choose one of {', '.join(MODES)}")
    for key in ("probe_size", "draws", "noise_batch"):
        if not isinstance(extra[key], int) or extra[key] <= 0:
            raise ValueError(f"{key.replace('_', ' ')} must be a positive integer, got {extra[key]!r}")
    cfg = RunConfig(**config, extra=extra).resolved()
    if cfg.schedule != "none":
        raise ValueError(
            f"an alignment run trains at a fixed learning rate; schedule {cfg.schedule} is for train runs"
        )
    if extra["mode"] == "score" and cfg.rule != "bp":
        raise ValueError(f"score mode trains bp and its theory network; rule must be 'bp', got {cfg.rule!r}")
    return cfg


def run_alignment(
    config: dict[str, Any],
    out: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one alignment run into folder ``out`` and return its result record.

    A run with the same config already finished (or diverged) in ``out`` is returned unchanged; a
    folder holding another config is refused. Divergence is recorded (``status: "diverged"``), not
    raised. ``on_epoch`` is called with each new epoch's record (after it is saved).
    """
    cfg = alignment_config(config)
    run = _run_score if cfg.extra["mode"] == "score" else _run_update
    if out is None:
        return run(cfg, out, progress, on_epoch)
    out = check_writable(out)
    with run_lock(out):
        previous = previous_result(out, cfg.as_dict())
        if previous is not None:
            return previous
        return run(cfg, out, progress, on_epoch)


def _run_update(
    cfg: RunConfig, out: Path | None, progress: bool, on_epoch: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    """``train_run`` with update alignment as an epoch metric.

    ``W(0)`` depends on the seed alone, so it is rebuilt (also after a resume) at the first call,
    from the trainer's own data: the data set is loaded once, by ``train_run``.
    """
    probe: dict[str, Any] = {}

    def metric(trainer: Trainer) -> dict[str, float]:
        if not probe:
            data, n = trainer.data, cfg.extra["probe_size"]
            initial = build_model(cfg, data).to(resolve_device(cfg.device), cfg.torch_dtype)
            probe.update(x=data.x_train[:n], y=data.y_train[:n], initial=weight_snapshot(initial))
        return update_alignment(trainer.rule, probe["x"], probe["y"], probe["initial"])

    def report_epoch(epoch_record: EpochRecord) -> None:
        if on_epoch is not None:
            on_epoch(epoch_record.as_dict())

    return train_run(cfg, out, progress=progress, on_epoch=report_epoch, epoch_metrics=[metric], kind=KIND)


def _score_epoch(pair: TheoryPair, data: Dataset, cfg: RunConfig, probe: torch.Tensor, epoch: int) -> dict:
    """One epoch of the pair, then evaluation and the alignment score (noise seeded by ``epoch``)."""
    classification = data.task == "classification"
    start = time.perf_counter()
    train_loss, train_acc = pair.train_epoch(data, cfg.batch_size, epoch)
    seconds = time.perf_counter() - start
    test_loss, test_acc = evaluate(
        pair.bp, pair.bp_rule.loss_fn, data.test_batches(cfg.batch_size), classification
    )
    theory_loss, theory_acc = evaluate(
        pair.theory, pair.bp_rule.loss_fn, data.test_batches(cfg.batch_size), classification
    )
    noise = generator(cfg.seed, f"alignment-noise-{epoch}")
    scores = pair.alignment(probe, noise, cfg.extra["draws"], cfg.extra["noise_batch"])
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "seconds": seconds,
        "theory_test_loss": theory_loss,
        "theory_test_acc": theory_acc,
        **alignment_metrics(scores),
    }


def _pair_state(pair: TheoryPair, history: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "bp": pair.bp.state_dict(),
        "theory": pair.theory.state_dict(),
        "initial": pair.initial.state_dict(),
        "bp_rule": pair.bp_rule.state_dict(),
        "theory_rule": pair.theory_rule.state_dict(),
        "bp_optimizer": pair.bp_optimizer.state_dict(),
        "theory_optimizer": pair.theory_optimizer.state_dict(),
        "shuffle": pair.shuffle.get_state(),
        "history": history,
    }


def _load_pair_state(pair: TheoryPair, state: dict[str, Any]) -> list[dict[str, Any]]:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported alignment checkpoint format {state.get('format')!r}")
    pair.bp.load_state_dict(state["bp"])
    pair.theory.load_state_dict(state["theory"])
    pair.initial.load_state_dict(state["initial"])
    pair.bp_rule.load_state_dict(state["bp_rule"])
    pair.theory_rule.load_state_dict(state["theory_rule"])
    pair.bp_optimizer.load_state_dict(state["bp_optimizer"])
    pair.theory_optimizer.load_state_dict(state["theory_optimizer"])
    pair.shuffle.set_state(state["shuffle"])
    return list(state["history"])


def _run_score(
    cfg: RunConfig, out: Path | None, progress: bool, on_epoch: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    """Train the bp/theory pair epoch by epoch, checkpointing both networks after each epoch."""
    device = resolve_device(cfg.device)
    check_fits(cfg, device)
    checkpoint = None if out is None else out / CHECKPOINT_FILE
    state = None if checkpoint is None else read_checkpoint(checkpoint, cfg.as_dict())
    data = load_data(cfg).to(device, cfg.torch_dtype)
    model = build_model(cfg, data).to(device, cfg.torch_dtype)
    optimizer = functools.partial(build_optimizer, cfg)
    pair = TheoryPair(model, cfg.loss_name(data), optimizer=optimizer, seed=cfg.seed)
    probe = data.x_train[: cfg.extra["probe_size"]]
    history: list[dict[str, Any]] = []
    resumed_from = None
    if state is not None:
        history = resume(functools.partial(_load_pair_state, pair), state, checkpoint)
        resumed_from = len(history)
    record = new_record(KIND, cfg.as_dict(), cfg.seed, device)
    start = time.perf_counter()

    def save() -> None:
        record["epochs"] = list(history)
        record["wall_seconds"] = sum(e["seconds"] for e in history)
        if out is not None:
            write_result(record, out)

    bar = tqdm(total=cfg.epochs, initial=len(history), desc="align-score", unit="epoch", disable=not progress)
    try:
        with bar:
            while len(history) < cfg.epochs:
                epoch_record = _score_epoch(pair, data, cfg, probe, len(history) + 1)
                history.append(epoch_record)
                if checkpoint is not None:
                    save_atomic(_pair_state(pair, history, cfg.as_dict()), checkpoint)
                save()
                bar.update()
                if on_epoch is not None:
                    on_epoch(epoch_record)
        record["status"] = "finished"
    except DivergedError as err:
        record["status"], record["error"] = "diverged", str(err)
    record["resumed_from_epoch"] = resumed_from
    record["session_seconds"] = time.perf_counter() - start
    save()
    return record
