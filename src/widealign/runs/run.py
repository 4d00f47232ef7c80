"""One training run from a :class:`RunConfig`, with a results file and exact resumption.

With an output folder, a run writes ``result.json`` (atomically, after every epoch) holding the
resolved configuration, library and torch versions, seed, device and per-epoch records, and
``checkpoint.pt`` after every epoch. Running the same configuration into the same folder again
returns the finished result without training (marked ``already_complete``, writing nothing), or
resumes an interrupted run from its last completed epoch, giving the numbers an uninterrupted run
would have given, on the same device or another one (the device is not part of
a run's identity; the checkpoint loads wherever the run continues). Per-epoch records are also
written as a table, ``metrics.csv``.

A folder is never mixed up: the run holds its lock (:func:`widealign.storage.run_lock`) while it
uses it; ``result.json`` and ``checkpoint.pt`` both carry the configuration they were made with,
and a run whose configuration differs is refused with the differing fields named; a damaged file
is a one-line error naming it, and the folder is left as it was. Every ``result.json`` carries a
``digest`` (SHA-256 over the record and its checkpoint's bytes, :func:`record_digest`): a record
edited by hand (``"running"`` made ``"finished"``, say), or one beside another checkpoint, is
refused on resume rather than trusted. A record from before digests is trusted only where it is
consistent (finished after all its epochs; diverged with its error). A record that has trained
epochs but whose checkpoint is gone is refused too, rather than restarted silently.

``sessions`` lists how each stretch of epochs was trained: ``first_epoch``, ``last_epoch``,
``batch_runs`` (1 alone; None where unknown: resumed from a checkpoint without its record) and,
for a batched stretch, ``batched_with`` (the other members' folder names) and ``float32_batched``
(a float32 batched run equals its separate run only up to rounding, which training can amplify:
docs/performance.md#batched-runs). A sweep resumed with another grouping adds a session.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import widealign
from widealign.data import Dataset, load_dataset
from widealign.rules import RULES, make_rule
from widealign.runs.config import (
    MODELS,
    RunConfig,
    build_model,
    build_optimizer,
    build_scheduler,
    check_fits,
    resolve_device,
    rule_arguments,
)
from widealign.runs.identity import run_identity
from widealign.storage import file_digest, load_checkpoint, run_lock, write_json_atomic
from widealign.train import DivergedError, EpochRecord, Trainer
from widealign.train.batched import BatchedTrainer
from widealign.train.metrics import METRICS_FILE, TensorBoardLogger, write_metrics_csv

RESULT_FILE = "result.json"
DATA_DIR_ENV, DOWNLOAD_ENV = "WIDEALIGN_DATA_DIR", "WIDEALIGN_DOWNLOAD"
#: A folder under which every run of a sweep writes TensorBoard scalars (``DIR/<run_id>``).
TENSORBOARD_ENV = "WIDEALIGN_TENSORBOARD"
CHECKPOINT_FILE = "checkpoint.pt"
SWEEP_FILE = "sweep.json"  # a sweep's manifest, in its results folder
#: Deepest nesting of lists and objects a results file may have (real records nest about 5 deep);
#: deeper files are refused as not result records, before anything recurses into them.
MAX_JSON_DEPTH = 32


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


def json_depth(text: str) -> int:
    """How deeply lists and objects nest in JSON ``text`` (counted without parsing, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_json_file(path: str | os.PathLike, what: str) -> Any:
    """The JSON in file ``path``; a one-line ValueError naming it (as not ``what``) if it is not
    JSON text or nests deeper than :data:`MAX_JSON_DEPTH`."""
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not {what} (not text: {err.reason})") from err
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from err
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{path} is not {what} (nested {depth} deep; at most {MAX_JSON_DEPTH} allowed)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not {what} (not valid JSON: {err})") from err


def read_result_file(path: str | os.PathLike) -> dict[str, Any]:
    """The result record in file ``path``; a one-line ValueError naming it if it is not one."""
    path = Path(path)
    record = load_json_file(path, "a result record")
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a result record (it holds {json.dumps(record)[:40]}, not an object)")
    for key, kind in (("config", dict), ("status", str), ("epochs", list)):
        if not isinstance(record.get(key), kind):
            raise ValueError(f"{path} is not a result record ('{key}' is missing or not a {kind.__name__})")
    return record


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of ``record`` (without its ``digest``) as canonical JSON: what a result file carries."""
    body = json.loads(json.dumps({k: v for k, v in record.items() if k != "digest"}))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_digest(record: dict[str, Any], out: Path) -> None:
    """Refuse (one-line ValueError) a result in folder ``out`` edited by hand or beside another checkpoint."""
    path, checkpoint = out / RESULT_FILE, out / CHECKPOINT_FILE
    again = "delete it to rebuild it from the checkpoint (or to run again)"
    if not isinstance(record.get("digest"), str):  # from an older widealign: check what can be checked
        expected, done = record["config"].get("epochs"), len(record["epochs"])
        if record["status"] == "finished" and isinstance(expected, int) and done != expected:
            raise ValueError(
                f"{path} says finished after {done} of its {expected} epochs and carries no digest "
                f"(edited by hand?); {again}"
            )
        if record["status"] == "diverged" and not record.get("error"):
            raise ValueError(
                f"{path} says diverged without an error and carries no digest (edited by hand?); {again}"
            )
        return
    if record_digest(record) != record["digest"]:
        raise ValueError(f"{path} was changed after widealign wrote it (its digest does not match); {again}")
    recorded = record.get("checkpoint_sha256")
    if recorded is not None and checkpoint.exists() and file_digest(checkpoint) != recorded:
        raise ValueError(f"{path} does not belong to {checkpoint} (another checkpoint's digest); {again}")


def write_result(record: dict[str, Any], out: str | os.PathLike) -> None:
    """Write a run's ``result.json`` and its per-epoch table ``metrics.csv`` into folder ``out``.

    The record gets ``checkpoint_sha256`` (of ``out/checkpoint.pt``, None without one) and its
    ``digest`` (:func:`record_digest`), which a resume checks (:func:`check_digest`).
    """
    checkpoint = Path(out) / CHECKPOINT_FILE
    record["checkpoint_sha256"] = file_digest(checkpoint) if checkpoint.exists() else None
    record["digest"] = record_digest(record)
    write_json_atomic(record, Path(out) / RESULT_FILE)
    write_metrics_csv(record.get("epochs", []), Path(out) / METRICS_FILE)


def read_result(out: str | os.PathLike) -> dict[str, Any] | None:
    """The result record in folder ``out``, or None if there is none (see :func:`read_result_file`)."""
    path = Path(out) / RESULT_FILE
    return read_result_file(path) if path.exists() else None


def config_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"name: A there, B here"`` for every field (``extra.key`` for extras) whose values differ.

    Fields that only say where a run happens (the device, :func:`run_identity`) are not compared.
    """

    def flat(config: dict[str, Any]) -> dict[str, Any]:
        config = json.loads(json.dumps(config))
        extra = config.pop("extra", None)
        nested = {f"extra.{k}": v for k, v in extra.items()} if isinstance(extra, dict) else {}
        return config | nested | ({} if isinstance(extra, dict) or extra is None else {"extra": extra})

    a, b = flat(run_identity(saved)), flat(run_identity(wanted))
    missing = object()
    return [
        f"{key}: {'(none)' if a.get(key, missing) is missing else json.dumps(a[key])} there, "
        f"{'(none)' if b.get(key, missing) is missing else json.dumps(b[key])} here"
        for key in dict.fromkeys([*a, *b])
        if a.get(key, missing) != b.get(key, missing)
    ]


def read_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``path`` if there is one, after checking it was made with ``config``.

    Raises a one-line ValueError naming the file and the differing fields otherwise (or if the
    file is damaged, see :func:`widealign.storage.load_checkpoint`).
    """
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict):
        raise ValueError(
            f"{path} does not record the configuration it was trained with (checkpoint format "
            f"{state.get('format')!r}, from an older widealign); delete it to start the run again"
        )
    differ = config_differences(state["config"], config)
    if differ:
        raise ValueError(
            f"{path} was trained with other settings ({'; '.join(differ)}); rerun with the same "
            "settings or choose another output folder"
        )
    return state


def check_writable(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and make sure files can be written there (a clear error if not)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {str(out)!r} is a file; give a folder (new or existing)")
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
    if cfg.train_size is None:
        return data
    available = len(data.x_train) if hasattr(data, "x_train") else None
    if available is not None and cfg.train_size > available:
        raise ValueError(
            f"train size {cfg.train_size} is more than the {available} training examples of "
            f"{cfg.dataset}; choose at most {available}"
        )
    return data.subset(cfg.train_size)


def previous_result(out: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The ended (finished or diverged) run in ``out``, if any; a different configuration is an error.

    The device is not compared (:func:`~widealign.runs.identity.run_identity`): a run may
    resume, or be looked up, on another device than the one it started on. An ended record must
    carry a matching digest (:func:`check_digest`); a record with trained epochs but no checkpoint
    beside it is refused (it cannot be resumed, and restarting would silently discard it).
    """
    previous = read_result(out)
    differ = [] if previous is None else config_differences(previous["config"], config)
    if differ:
        raise ValueError(
            f"{out} holds a run with a different configuration ({'; '.join(differ)}); choose another "
            "output folder"
        )
    if previous is None:
        return None
    if previous["status"] in ("finished", "diverged"):
        check_digest(previous, out)
        previous["already_complete"] = True
        return previous
    if previous["epochs"] and previous.get("checkpoint_sha256") and not (out / CHECKPOINT_FILE).exists():
        raise ValueError(
            f"{out / RESULT_FILE} records {len(previous['epochs'])} trained epoch(s) but "
            f"{out / CHECKPOINT_FILE} is missing, so the run cannot resume; delete result.json to start "
            "it again"
        )
    return None


def train_run(
    cfg: RunConfig,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    epoch_metrics: list[Callable[[Trainer], dict[str, Any]]] | None = None,
    kind: str = "train",
    tensorboard: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train one configuration and return its result record (see the module docstring).

    A diverging run is recorded with ``status: "diverged"`` and its message, not raised, so that
    sweeps go on; callers that want an error check ``status``. ``epoch_metrics`` add diagnostics to
    every epoch's record; ``kind`` names the run kind in the record. ``tensorboard`` names a folder
    for TensorBoard scalars of every epoch trained (needs the ``tensorboard`` extra).
    """
    cfg = cfg.resolved()
    if out is None:
        return _train(cfg, None, progress, on_epoch, epoch_metrics, kind, tensorboard)
    out = check_writable(out)
    with run_lock(out):
        previous = previous_result(out, cfg.as_dict())
        if previous is not None:
            return previous
        return _train(cfg, out, progress, on_epoch, epoch_metrics, kind, tensorboard)


class _Run:
    """One run being trained: its trainer, its result record, and how an epoch is saved."""

    def __init__(
        self,
        cfg: RunConfig,
        out: Path | None,
        data: Dataset,
        device: torch.device,
        progress: bool,
        on_epoch: Callable[[EpochRecord], None] | None,
        epoch_metrics: list[Callable[[Trainer], dict[str, Any]]] | None,
        kind: str,
        tensorboard: str | os.PathLike | None,
    ) -> None:
        self.cfg, self.out, self.on_epoch = cfg, out, on_epoch
        checkpoint = None if out is None else out / CHECKPOINT_FILE
        state = None if checkpoint is None else read_checkpoint(checkpoint, cfg.as_dict())
        model = build_model(cfg, data).to(device, cfg.torch_dtype)
        rule = make_rule(cfg.rule, model, cfg.loss_name(data), seed=cfg.seed, **rule_arguments(cfg))
        optimizer = build_optimizer(cfg, [*model.parameters(), *rule.feedback_parameters()])
        self.trainer = Trainer(
            model, rule, optimizer, data, cfg.batch_size, seed=cfg.seed,
            checkpoint=checkpoint, epoch_metrics=epoch_metrics, progress=progress, config=cfg.as_dict(),
            eval_train=cfg.eval_train, autocast=cfg.autocast, compile=cfg.compile,
            scheduler=build_scheduler(cfg, optimizer),
        )  # fmt: skip
        if state is not None:
            resume(self.trainer.resume, state, checkpoint)
        self.record = new_record(kind, cfg.as_dict(), cfg.seed, device)
        self.record["sessions"] = self._earlier_sessions()
        self.session: dict[str, Any] = {"first_epoch": self.trainer.epoch + 1, "batch_runs": 1}
        self.board = TensorBoardLogger(tensorboard) if tensorboard is not None else None
        self.start = time.perf_counter()

    def _earlier_sessions(self) -> list[dict[str, Any]]:
        """The sessions that trained the checkpoint's epochs, from the record on disk (or unknown)."""
        done = self.trainer.epoch
        if done == 0:
            return []
        with contextlib.suppress(ValueError):
            earlier = (read_result(self.out) or {}).get("sessions") if self.out is not None else None
            if isinstance(earlier, list) and all(isinstance(e, dict) for e in earlier):
                kept = [dict(e) for e in earlier if isinstance(e.get("first_epoch"), int)]
                kept = [e for e in kept if e["first_epoch"] <= done]
                for e in kept:
                    if isinstance(e.get("last_epoch"), int):
                        e["last_epoch"] = min(e["last_epoch"], done)
                if kept and kept[-1].get("last_epoch") == done:
                    return kept
        return [{"first_epoch": 1, "last_epoch": done, "batch_runs": None}]

    def batched_with(self, others: list[str]) -> None:
        """Record that this session trains batched with the runs in folders ``others``."""
        self.session |= {
            "batch_runs": len(others) + 1,
            "batched_with": others,
            "float32_batched": self.cfg.dtype == "float32",
        }
        self.record["batch_runs"] = len(others) + 1

    def save(self, epoch_record: EpochRecord | None = None) -> None:
        """Write the record with the epochs so far (and log ``epoch_record`` where asked)."""
        if self.trainer.epoch >= self.session["first_epoch"]:
            self.session["last_epoch"] = self.trainer.epoch
            if not any(entry is self.session for entry in self.record["sessions"]):
                self.record["sessions"].append(self.session)
        self.record["epochs"] = [r.as_dict() for r in self.trainer.history]
        self.record["wall_seconds"] = sum(r.seconds for r in self.trainer.history)
        if self.out is not None:
            write_result(self.record, self.out)
        if epoch_record is not None and self.board is not None:
            self.board.log(epoch_record.as_dict())
        if epoch_record is not None and self.on_epoch is not None:
            self.on_epoch(epoch_record)

    def fit(self, progress: bool) -> dict[str, Any]:
        """Train this run alone to its epochs and return its finished (or diverged) record."""
        self.trainer.progress = progress
        try:
            self.trainer.fit(self.cfg.epochs, on_epoch=self.save)
        except DivergedError as err:
            return self.finish(err)
        except BaseException:
            self.close()
            raise
        return self.finish(None)

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self.board is not None:
            self.board.close()

    def finish(self, error: DivergedError | None) -> dict[str, Any]:
        """Record how the run ended (finished, or diverged with ``error``) and write it."""
        self.close()
        self.record["status"] = "finished" if error is None else "diverged"
        if error is not None:
            self.record["error"] = str(error)
        self.record["resumed_from_epoch"] = self.trainer.resumed_from
        self.record["session_seconds"] = time.perf_counter() - self.start
        self.save()
        return self.record


def _train(
    cfg: RunConfig,
    out: Path | None,
    progress: bool,
    on_epoch: Callable[[EpochRecord], None] | None,
    epoch_metrics: list[Callable[[Trainer], dict[str, Any]]] | None,
    kind: str,
    tensorboard: str | os.PathLike | None = None,
) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    check_fits(cfg, device)
    data = load_data(cfg).to(device, cfg.torch_dtype)
    run = _Run(cfg, out, data, device, progress, on_epoch, epoch_metrics, kind, tensorboard)
    return run.fit(progress)


def batch_key(cfg: RunConfig) -> str | None:
    """What runs must share to train together as one batched run (None if ``cfg`` cannot batch).

    Runs that differ only in seed, or in seed and learning rate, share a key; the learning rate is
    part of the key where the members must share it (Adam, and rules with their own step size).
    A run can batch when its rule is batchable, its model one of widealign's own families, and it
    trains without autocast, uncompiled, and without momentum, weight decay or a learning-rate
    schedule (such runs train one at a time: the stacked optimiser is plain SGD or Adam at fixed
    rates).
    """
    cfg = cfg.resolved()
    if (
        not RULES[cfg.rule].batchable_with(cfg.rule_options)
        or cfg.model not in MODELS
        or cfg.autocast is not None
        or cfg.compile
        or (cfg.momentum, cfg.weight_decay, cfg.schedule) != (0, 0, "none")
    ):
        return None
    shared = cfg.as_dict()
    shared.pop("seed")
    if cfg.optimizer == "sgd" and "lr" not in inspect.signature(RULES[cfg.rule].__init__).parameters:
        shared.pop("lr")
    return json.dumps(shared, sort_keys=True)


def train_batched(
    cfgs: Sequence[RunConfig],
    outs: Sequence[str | os.PathLike | None],
    progress: bool = True,
    tensorboard: Sequence[str | os.PathLike | None] | None = None,
) -> list[dict[str, Any]]:
    """Train runs that share a :func:`batch_key` as one batched run; their records, in order.

    Each run's folder ends up as its separate run would leave it (``result.json`` with the record,
    ``checkpoint.pt``, ``metrics.csv``), with ``batch_runs`` (how many trained together) in the
    record. Runs already ended are returned as they are; the others resume from their checkpoints,
    together when they stopped at the same epoch, and one by one otherwise.
    """
    cfgs = [c.resolved() for c in cfgs]
    keys = {batch_key(c) for c in cfgs}
    if len(keys) != 1 or None in keys:
        raise ValueError("these runs cannot train as one batched run (they differ in more than seed and lr)")
    boards = list(tensorboard) if tensorboard is not None else [None] * len(cfgs)
    folders = [None if o is None else check_writable(o) for o in outs]
    records: list[dict[str, Any] | None] = [None] * len(cfgs)
    with contextlib.ExitStack() as stack:
        for folder in folders:
            if folder is not None:
                stack.enter_context(run_lock(folder))
        for k, (cfg, folder) in enumerate(zip(cfgs, folders)):
            records[k] = None if folder is None else previous_result(folder, cfg.as_dict())
        pending = [k for k in range(len(cfgs)) if records[k] is None]
        if pending:
            device = resolve_device(cfgs[0].device)
            check_fits(cfgs[0], device)
            data = load_data(cfgs[0]).to(device, cfgs[0].torch_dtype)
            runs = {
                k: _Run(cfgs[k], folders[k], data, device, False, None, None, "train", boards[k])
                for k in pending
            }
            by_epoch: dict[int, list[int]] = {}
            for k in pending:
                by_epoch.setdefault(runs[k].trainer.epoch, []).append(k)
            for members in by_epoch.values():
                for k, record in _fit_together([runs[k] for k in members], progress).items():
                    records[members[k]] = record
    return records  # type: ignore[return-value]


def _fit_together(runs: list[_Run], progress: bool) -> dict[int, dict[str, Any]]:
    """Train ``runs`` (at one epoch) as one batched run; their finished records by position."""
    epochs = runs[0].cfg.epochs
    if len(runs) == 1 or runs[0].trainer.epoch >= epochs:
        return {k: run.fit(progress) for k, run in enumerate(runs)}
    batched = BatchedTrainer(
        [r.trainer for r in runs], rule_options=rule_arguments(runs[0].cfg), progress=progress
    )
    names = [str(run.out.name) if run.out is not None else f"#{k}" for k, run in enumerate(runs)]
    for k, run in enumerate(runs):
        run.batched_with([name for j, name in enumerate(names) if j != k])
    try:
        diverged = batched.fit(epochs, on_epoch=lambda k, record: runs[k].save(record))
    except BaseException:
        for run in runs:
            run.close()
        raise
    return {k: run.finish(diverged.get(k)) for k, run in enumerate(runs)}


def resume(load: Callable[[dict[str, Any]], Any], state: dict[str, Any], path: Path) -> Any:
    """``load(state)``, with a state that does not fit the built run as a one-line error naming ``path``."""
    try:
        return load(state)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as err:
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        raise ValueError(
            f"{path} does not fit this run ({reason}); delete it to start the run again"
        ) from err
