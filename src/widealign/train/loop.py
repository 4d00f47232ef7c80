"""The training loop: epochs of seeded mini-batches, evaluation, divergence checks, checkpoints.

One epoch: shuffle the training set with the run's own generator, and for each batch call
``optimizer.zero_grad()``, ``rule.backward(x, y)`` (which adds the update to ``.grad``) then
``optimizer.step()``. The
training loss and accuracy of an epoch (``train_loss``, ``train_acc``) are averages over its
batches of the current network's outputs before each update; the held-out metrics are computed
after the epoch, in batches of the training batch size (the paper's normalisation uses batch
statistics at evaluation time too), in the data set's fixed shuffled evaluation order. With
``eval_train`` the whole training set is also evaluated after the epoch, as the authors' Add-task
code does (``train_eval_loss``, ``train_eval_acc``): the training loss of the network the epoch
ended with, which the paper's "best train loss" is the minimum of.

The data is either one of the in-memory data sets (the fast default: tensors already on the
training device, shuffled by the trainer's own seeded generator) or any re-iterable of ``(x, y)``
batches, such as a ``torch.utils.data.DataLoader``, with the held-out batches as ``test_data``
(:class:`BatchIterables`); such batches are moved to the model's device and dtype as they come.

With ``autocast="bf16"`` every ``rule.backward`` and every evaluation runs under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matrix products and convolutions of the
forward pass in bfloat16, the parameters, their updates and the optimiser in the parameters' dtype.
For a float64 model it is a no-op (no autocast region is entered; torch's autocast would leave
float64 ops alone anyway), so a float64 run gives the same numbers with or without it.

A checkpoint written after every epoch (atomically) holds the model, the rule state, the
optimiser, the shuffling generator, the history and the run's configuration, so a resumed run
continues with exactly the numbers an uninterrupted run would have produced, and a caller can
check that it resumes the run it means to. Checkpoints hold tensors and plain values only and are
opened with ``torch.load(weights_only=True)`` (:func:`widealign.storage.load_checkpoint`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from widealign.data.base import Dataset
from widealign.rules.base import Rule
from widealign.seeding import generator
from widealign.storage import load_checkpoint, save_atomic

#: ``autocast`` values and the lower-precision dtype each one computes in.
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16}

#: Format 2 added the configuration; format 1 checkpoints are refused (they cannot be checked).
CHECKPOINT_FORMAT = 2


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"training diverged: loss is {loss} at epoch {epoch}, step {step} (try a smaller learning rate)"
        )
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclass
class EpochRecord:
    """Metrics of one epoch; accuracies are None for regression data, held-out ones without it."""

    epoch: int
    train_loss: float
    train_acc: float | None
    test_loss: float | None
    test_acc: float | None
    seconds: float
    extra: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        extra = record.pop("extra") or {}
        return record | extra


def correct(output: Tensor, target: Tensor) -> int:
    """Examples whose output argmax equals the target's argmax (or the target label)."""
    labels = target if target.dim() == 1 else target.argmax(-1)
    return int((output.argmax(-1) == labels).sum())


@torch.no_grad()
def evaluate(
    model: nn.Module, loss_fn: Callable, batches: Iterable[tuple[Tensor, Tensor]], classification: bool
) -> tuple[float | None, float | None]:
    """Mean loss and accuracy (None unless ``classification``) over the given batches (None, None
    if there are none)."""
    was_training = model.training
    model.eval()
    total_loss, hits, n = 0.0, 0, 0
    for xb, yb in batches:
        out = model(xb)
        total_loss += float(loss_fn(out, yb)) * len(xb)
        hits += correct(out, yb) if classification else 0
        n += len(xb)
    model.train(was_training)
    if n == 0:
        return None, None
    return total_loss / n, (hits / n if classification else None)


def compile_model(model: nn.Module) -> nn.Module:
    """Compile ``model``'s forward pass with ``torch.compile``, in place; returns ``model``.

    Opt-in (``Trainer(compile=True)``, ``--compile``; ours). The model keeps its parameters, state
    dict and every rule's binding to it: only its ``forward`` is replaced by the compiled one, which
    every call of the model (and ``torch.func.functional_call`` on it, as the Align rules' initial
    network uses) goes through. Backward passes that rules compute by hand (feedback matrices,
    relaxations) are not compiled. Compiling costs tens of seconds before the first step (more
    after each new batch shape or train/eval switch), so it pays only on long runs; float32 numbers
    may differ from the uncompiled run's in the last bits (fused kernels round differently).
    Calling it twice compiles once.
    """
    if getattr(model.forward, "_widealign_compiled", False):
        return model
    compiled = torch.compile(model.forward)
    compiled._widealign_compiled = True  # type: ignore[attr-defined]
    model.forward = compiled  # type: ignore[method-assign]
    return model


def check_autocast(autocast: str | None) -> None:
    """A one-line ValueError unless ``autocast`` is None or one of :data:`AUTOCAST_DTYPES`."""
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown autocast {autocast!r}; choose one of {', '.join(AUTOCAST_DTYPES)} or none")


def autocast_region(model: nn.Module, autocast: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on the model's device for ``autocast`` (see the module docstring); a
    no-op context without it or for a float64 model."""
    check_autocast(autocast)
    ref = next(model.parameters(), None)
    if autocast is None or ref is None or ref.dtype == torch.float64:
        return contextlib.nullcontext()
    return torch.autocast(ref.device.type, dtype=AUTOCAST_DTYPES[autocast])


class BatchIterables:
    """Training and held-out batches from re-iterables of ``(x, y)`` pairs (DataLoaders, lists).

    Each epoch iterates ``train`` afresh, so its order is the iterable's own (a DataLoader's
    ``shuffle``/``generator``); every batch is moved to ``device`` with floating tensors in ``dtype``.
    ``y`` may be targets shaped like the outputs or integer class labels (see
    :func:`widealign.losses.label_targets`). ``task`` is ``"classification"`` (accuracy is reported)
    or ``"regression"``.
    """

    def __init__(
        self,
        train: Iterable[tuple[Tensor, Tensor]],
        test: Iterable[tuple[Tensor, Tensor]] | None = None,
        task: str = "classification",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        for name, batches in (("training", train), ("held-out", test)):
            if batches is not None and iter(batches) is batches:
                raise ValueError(
                    f"the {name} batches are a one-pass iterator; pass something that can be iterated "
                    "every epoch (a DataLoader, a list of (x, y) pairs)"
                )
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.train, self.test, self.task = train, test, task
        self.device, self.dtype = device, dtype

    def _moved(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        for xb, yb in batches:
            yield tuple(
                t.to(
                    device=self.device, dtype=self.dtype if t.is_floating_point() else None, non_blocking=True
                )
                for t in (xb, yb)
            )

    def train_batches(self, batch_size: int | None, generator: torch.Generator | None) -> Iterator:
        """One pass over the training batches (``batch_size`` and ``generator`` are the iterable's)."""
        return self._moved(self.train)

    def test_batches(self, batch_size: int | None) -> Iterator:
        """One pass over the held-out batches (none if there are none)."""
        return self._moved(self.test if self.test is not None else ())


class Trainer:
    """Trains ``model`` with ``rule`` and ``optimizer`` on ``data``.

    Args:
        model: the network to train.
        rule: the learning rule, bound to ``model``.
        optimizer: an optimiser over ``model``'s parameters.
        data: an in-memory data set already on the model's device and dtype (anything with
            ``task``, ``train_batches(batch_size, generator)`` and ``test_batches(batch_size)``), or
            any re-iterable of ``(x, y)`` training batches, such as a ``torch.utils.data.DataLoader``
            (wrapped in :class:`BatchIterables`; its batches are moved to the model's device).
        batch_size: training (and evaluation) batch size of an in-memory data set; a DataLoader has
            its own (leave this None).
        test_data: held-out batches when ``data`` is an iterable of batches (optional: without them
            the held-out metrics are None).
        task: ``"classification"`` or ``"regression"`` for an iterable of batches (default
            classification); an in-memory data set knows its own.
        seed: seeds the shuffling order of an in-memory data set (independently of the model's and
            the rule's streams). A DataLoader shuffles with its own generator, whose state is not
            in the checkpoint: a resumed run continues, but not with an uninterrupted run's order.
        checkpoint: a file written after every epoch; if it exists when :meth:`fit` starts, training
            resumes from it.
        epoch_metrics: functions called after every epoch with the trainer, returning extra
            metrics (a dict) to store in that epoch's record (e.g. alignment diagnostics).
        progress: show a progress bar on stderr.
        config: the run's configuration (plain values), stored in every checkpoint so that a
            resume can be checked against it.
        eval_train: after every epoch, evaluate the whole training set (``data.train_eval_batches``)
            and record ``train_eval_loss`` and ``train_eval_acc``.
        autocast: None (default) or ``"bf16"``: run the rule's steps and the evaluations under
            bfloat16 autocast (a no-op for a float64 model; see the module docstring).
        compile: compile the model's forward pass with ``torch.compile`` (:func:`compile_model`;
            default off).
        scheduler: a learning-rate schedule over ``optimizer``, stepped after every epoch (its
            state is in the checkpoint); each epoch's record then holds the ``lr`` it trained at.
    """

    def __init__(
        self,
        model: nn.Module,
        rule: Rule,
        optimizer: torch.optim.Optimizer,
        data: Dataset | BatchIterables | Iterable[tuple[Tensor, Tensor]],
        batch_size: int | None = None,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        epoch_metrics: list[Callable[[Trainer], dict[str, Any]]] | None = None,
        progress: bool = True,
        config: dict[str, Any] | None = None,
        test_data: Iterable[tuple[Tensor, Tensor]] | None = None,
        task: str | None = None,
        eval_train: bool = False,
        autocast: str | None = None,
        compile: bool = False,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        check_autocast(autocast)
        if scheduler is not None and scheduler.optimizer is not optimizer:
            raise ValueError("the scheduler steps a different optimiser")
        if rule.model is not model:
            raise ValueError("the rule is bound to a different model")
        if not hasattr(data, "train_batches"):
            ref = next(model.parameters())
            data = BatchIterables(data, test_data, task or "classification", ref.device, ref.dtype)
        elif test_data is not None or task is not None:
            raise ValueError("test_data and task go with an iterable of batches, not a data set")
        elif batch_size is None or batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.model, self.rule, self.optimizer, self.data = model, rule, optimizer, data
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.epoch_metrics = list(epoch_metrics or [])
        self.progress = progress
        self.config = dict(config or {})
        self.eval_train = eval_train
        self.autocast = autocast
        self.compile = bool(compile)
        if self.compile:
            compile_model(model)
        self.shuffle = generator(seed, "shuffle")
        self.history: list[EpochRecord] = []
        self.resumed_from: int | None = None
        #: The rule's :meth:`~widealign.rules.base.Rule.step_stats` of the last epoch, mean per step.
        self.step_stats: dict[str, float] = {}

    @property
    def epoch(self) -> int:
        """Epochs completed so far."""
        return len(self.history)

    @property
    def classification(self) -> bool:
        return self.data.task == "classification"

    def evaluate(self) -> tuple[float | None, float | None]:
        """Held-out loss and accuracy of the current network (None, None without held-out data)."""
        held_out = self.data.test_batches(self.batch_size)
        with autocast_region(self.model, self.autocast):
            return evaluate(self.model, self.rule.loss_fn, held_out, self.classification)

    def train_epoch(self) -> tuple[float, float | None]:
        """One pass over the shuffled training set; returns its mean loss and accuracy."""
        self.model.train()
        total_loss, hits, n = 0.0, 0, 0
        self.step_stats = {}
        for step, (xb, yb) in enumerate(self.data.train_batches(self.batch_size, self.shuffle)):
            self.optimizer.zero_grad(set_to_none=True)
            with autocast_region(self.model, self.autocast):
                loss, out = self.rule.backward(xb, yb)
            for key, value in self.rule.step_stats().items():
                self.step_stats[key] = self.step_stats.get(key, 0.0) + value
            if not math.isfinite(float(loss)):
                raise DivergedError(self.epoch + 1, step, float(loss))
            self.optimizer.step()
            total_loss += float(loss) * len(xb)
            hits += correct(out, yb) if self.classification else 0
            n += len(xb)
        if n == 0:
            raise ValueError("the training data yielded no batches")
        self.step_stats = {k: v / (step + 1) for k, v in self.step_stats.items()}
        return total_loss / n, (hits / n if self.classification else None)

    def fit(self, epochs: int, on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
        """Train until ``epochs`` epochs are complete (resuming from the checkpoint if present)."""
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        if self.checkpoint is not None and self.checkpoint.exists() and not self.history:
            self.resume(load_checkpoint(self.checkpoint))
        bar = tqdm(
            total=epochs, initial=self.epoch, desc=self.rule.name, unit="epoch", disable=not self.progress
        )
        with bar:
            while self.epoch < epochs:
                start = time.perf_counter()
                lr = float(self.optimizer.param_groups[0]["lr"])
                train_loss, train_acc = self.train_epoch()
                seconds = time.perf_counter() - start
                test_loss, test_acc = self.evaluate()
                extra: dict[str, Any] = dict(self.step_stats)
                if self.scheduler is not None:
                    self.scheduler.step()
                    extra["lr"] = lr
                if self.eval_train:
                    batches = self.data.train_eval_batches(self.batch_size)
                    with autocast_region(self.model, self.autocast):
                        loss, acc = evaluate(self.model, self.rule.loss_fn, batches, self.classification)
                    extra |= {"train_eval_loss": loss, "train_eval_acc": acc}
                for metric in self.epoch_metrics:
                    extra |= metric(self)
                record = EpochRecord(
                    self.epoch + 1, train_loss, train_acc, test_loss, test_acc, seconds, extra or None
                )
                self.history.append(record)
                if self.checkpoint is not None:
                    save_atomic(self.state_dict(), self.checkpoint)
                shown = test_acc if test_acc is not None else test_loss
                bar.set_postfix(loss=f"{train_loss:.4g}", test="-" if shown is None else f"{shown:.4g}")
                bar.update()
                if on_epoch is not None:
                    on_epoch(record)
        return self.history

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config,
            "model": self.model.state_dict(),
            "rule": self.rule.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **({} if self.scheduler is None else {"scheduler": self.scheduler.state_dict()}),
            "shuffle": self.shuffle.get_state(),
            "history": [asdict(r) for r in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (from this or a fresh, identically built trainer)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"unsupported checkpoint format {state.get('format')!r} (this widealign writes "
                f"{CHECKPOINT_FORMAT}, with the run's configuration)"
            )
        self.model.load_state_dict(state["model"])
        self.rule.load_state_dict(state["rule"])
        self.optimizer.load_state_dict(state["optimizer"])
        if (self.scheduler is None) != ("scheduler" not in state):
            had = "has no" if "scheduler" not in state else "has a"
            raise ValueError(f"the checkpoint {had} learning-rate schedule state, unlike this trainer")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.shuffle.set_state(state["shuffle"])
        self.history = [EpochRecord(**r) for r in state["history"]]

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`state_dict`; :attr:`resumed_from` records its epoch."""
        self.load_state_dict(state)
        self.resumed_from = self.epoch
