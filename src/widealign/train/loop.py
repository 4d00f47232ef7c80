"""The training loop: epochs of seeded mini-batches, evaluation, divergence checks, checkpoints.

One epoch: shuffle the training set with the run's own generator, and for each batch call
``rule.backward(x, y)`` (which leaves the update in ``.grad``) then ``optimizer.step()``. The
training loss and accuracy of an epoch (``train_loss``, ``train_acc``) are averages over its
batches of the current network's outputs before each update; the held-out metrics are computed
after the epoch, in batches of the training batch size (the paper's normalisation uses batch
statistics at evaluation time too), in the data set's fixed shuffled evaluation order. With
``eval_train`` the whole training set is also evaluated after the epoch, as the authors' Add-task
code does (``train_eval_loss``, ``train_eval_acc``): the training loss of the network the epoch
ended with, which the paper's "best train loss" is the minimum of.

A checkpoint written after every epoch (atomically) holds the model, the rule state, the
optimiser, the shuffling generator and the history, so a resumed run continues with exactly the
numbers an uninterrupted run would have produced.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from widealign.data.base import Dataset
from widealign.rules.base import Rule
from widealign.seeding import generator

CHECKPOINT_FORMAT = 1


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"training diverged: loss is {loss} at epoch {epoch}, step {step} (try a smaller learning rate)"
        )
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclass
class EpochRecord:
    """Metrics of one epoch; accuracies are None for regression data."""

    epoch: int
    train_loss: float
    train_acc: float | None
    test_loss: float
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
) -> tuple[float, float | None]:
    """Mean loss and accuracy (None unless ``classification``) over the given batches."""
    was_training = model.training
    model.eval()
    total_loss, hits, n = 0.0, 0, 0
    for xb, yb in batches:
        out = model(xb)
        total_loss += float(loss_fn(out, yb)) * len(xb)
        hits += correct(out, yb) if classification else 0
        n += len(xb)
    model.train(was_training)
    return total_loss / n, (hits / n if classification else None)


class Trainer:
    """Trains ``model`` with ``rule`` and ``optimizer`` on ``data``.

    Args:
        model, rule, optimizer: the rule must be bound to ``model``; the optimiser to its parameters.
        data: a data set already on the model's device and dtype (anything with ``task``,
            ``train_batches(batch_size, generator)`` and ``test_batches(batch_size)``).
        batch_size: training (and evaluation) batch size.
        seed: seeds the shuffling order (independently of the model's and the rule's streams).
        checkpoint: a file written after every epoch; if it exists when :meth:`fit` starts, training
            resumes from it.
        epoch_metrics: functions called after every epoch with the trainer, returning extra
            metrics (a dict) to store in that epoch's record (e.g. alignment diagnostics).
        progress: show a progress bar on stderr.
        eval_train: after every epoch, evaluate the whole training set (``data.train_eval_batches``)
            and record ``train_eval_loss`` and ``train_eval_acc``.
    """

    def __init__(
        self,
        model: nn.Module,
        rule: Rule,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        batch_size: int,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        epoch_metrics: list[Callable[[Trainer], dict[str, Any]]] | None = None,
        progress: bool = True,
        eval_train: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if rule.model is not model:
            raise ValueError("the rule is bound to a different model")
        self.model, self.rule, self.optimizer, self.data = model, rule, optimizer, data
        self.batch_size = batch_size
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.epoch_metrics = list(epoch_metrics or [])
        self.progress = progress
        self.eval_train = eval_train
        self.shuffle = generator(seed, "shuffle")
        self.history: list[EpochRecord] = []
        self.resumed_from: int | None = None

    @property
    def epoch(self) -> int:
        """Epochs completed so far."""
        return len(self.history)

    @property
    def classification(self) -> bool:
        return self.data.task == "classification"

    def train_epoch(self) -> tuple[float, float | None]:
        """One pass over the shuffled training set; returns its mean loss and accuracy."""
        self.model.train()
        total_loss, hits, n = 0.0, 0, 0
        for step, (xb, yb) in enumerate(self.data.train_batches(self.batch_size, self.shuffle)):
            loss, out = self.rule.backward(xb, yb)
            if not math.isfinite(float(loss)):
                raise DivergedError(self.epoch + 1, step, float(loss))
            self.optimizer.step()
            total_loss += float(loss) * len(xb)
            hits += correct(out, yb) if self.classification else 0
            n += len(xb)
        return total_loss / n, (hits / n if self.classification else None)

    def fit(self, epochs: int, on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
        """Train until ``epochs`` epochs are complete (resuming from the checkpoint if present)."""
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        if self.checkpoint is not None and self.checkpoint.exists() and not self.history:
            self.load_state_dict(torch.load(self.checkpoint, map_location="cpu", weights_only=False))
            self.resumed_from = self.epoch
        bar = tqdm(
            total=epochs, initial=self.epoch, desc=self.rule.name, unit="epoch", disable=not self.progress
        )
        with bar:
            while self.epoch < epochs:
                start = time.perf_counter()
                train_loss, train_acc = self.train_epoch()
                seconds = time.perf_counter() - start
                held_out = self.data.test_batches(self.batch_size)
                test_loss, test_acc = evaluate(self.model, self.rule.loss_fn, held_out, self.classification)
                extra: dict[str, Any] = {}
                if self.eval_train:
                    batches = self.data.train_eval_batches(self.batch_size)
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
                bar.set_postfix(
                    loss=f"{train_loss:.4g}", test=f"{test_acc if test_acc is not None else test_loss:.4g}"
                )
                bar.update()
                if on_epoch is not None:
                    on_epoch(record)
        return self.history

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "rule": self.rule.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "shuffle": self.shuffle.get_state(),
            "history": [asdict(r) for r in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (from this or a fresh, identically built trainer)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
        self.model.load_state_dict(state["model"])
        self.rule.load_state_dict(state["rule"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle.set_state(state["shuffle"])
        self.history = [EpochRecord(**r) for r in state["history"]]


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
