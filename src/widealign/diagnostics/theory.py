"""The "theory" training mode of docs/method.md#alignment-score: a bp network and its align-zero shadow.

Two networks start from the same ``theta_0``. On every batch ``(x, y)`` the bp network computes its
output ``f_bp``, loss and error ``e = dL/df`` at ``f_bp``, and takes its backprop step; the theory
network takes the step

    g_theory = J_{theta_0}(x)^T e_bp,

align-zero's update driven by the *bp network's* error (``AlignZero.apply_initial_vjp``). It is the
infinite-width prediction of what bp does, so comparing the two networks' weight changes (the
alignment score) measures how far a finite network is from that limit. At the first step
(``theta = theta_0``) the two updates are identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from widealign.data.base import Dataset
from widealign.diagnostics.alignment_score import BATCH, DRAWS, LayerAlignment, alignment_scores
from widealign.losses import Loss, loss_and_error
from widealign.rules.align_zero import AlignZero
from widealign.rules.base import StepResult
from widealign.rules.bp import Backprop
from widealign.seeding import generator
from widealign.train.loop import DivergedError, correct

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class TheoryPair:
    """Trains ``model`` with bp and a copy of it with the theory rule, on the same batches.

    Args:
        model: the bp network (trained in place); the theory network and a frozen copy of the
            initial network (``initial``, holding ``W(0)``) are deep copies made here.
        loss: the loss both networks' errors come from.
        lr: learning rate of the default optimiser, plain SGD (the paper's).
        optimizer: builds an optimiser from parameters (overrides ``lr``); one per network.
        seed: seeds the shuffling order of :meth:`train_epoch`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        lr: float = 1.0,
        optimizer: OptimizerFactory | None = None,
        seed: int = 0,
    ) -> None:
        factory = optimizer or (lambda params: torch.optim.SGD(params, lr=lr))
        self.bp = model
        self.theory = copy.deepcopy(model)
        self.initial = copy.deepcopy(model).requires_grad_(False)
        self.bp_rule = Backprop(self.bp, loss)
        self.theory_rule = AlignZero(self.theory, loss)
        self.bp_optimizer = factory(self.bp.parameters())
        self.theory_optimizer = factory(self.theory.parameters())
        self.shuffle = generator(seed, "shuffle")

    def compute_updates(self, x: Tensor, y: Tensor) -> StepResult:
        """Fill both networks' ``.grad`` (bp's gradient; ``J_{theta_0}(x)^T e_bp``), step neither.

        Returns the bp network's loss and output on the batch.
        """
        for p in self.bp.parameters():
            p.grad = None
        result = self.bp_rule.backward(x, y)
        _, e = loss_and_error(self.bp_rule.loss_fn, result.output, y)
        for p in self.theory.parameters():
            p.grad = None
        self.theory_rule.apply_initial_vjp(x, e)
        return result

    def step(self, x: Tensor, y: Tensor) -> StepResult:
        """One training step of both networks on ``(x, y)``; returns the bp network's loss, output."""
        result = self.compute_updates(x, y)
        self.bp_optimizer.step()
        self.theory_optimizer.step()
        return result

    def train_epoch(self, data: Dataset, batch_size: int = 100, epoch: int = 1) -> tuple[float, float | None]:
        """One shuffled pass over ``data``'s training set, both networks stepped on every batch.

        Returns the bp network's mean loss and accuracy (None for regression data) over the epoch,
        like :meth:`widealign.train.Trainer.train_epoch`; a non-finite loss raises
        :class:`~widealign.train.DivergedError` (``epoch`` is reported in it) before any step.
        """
        classification = data.task == "classification"
        self.bp.train()
        self.theory.train()
        total, hits, n = 0.0, 0, 0
        for step, (xb, yb) in enumerate(data.train_batches(batch_size, self.shuffle)):
            loss, output = self.compute_updates(xb, yb)
            if not math.isfinite(float(loss)):
                raise DivergedError(epoch, step, float(loss))
            self.bp_optimizer.step()
            self.theory_optimizer.step()
            total += float(loss) * len(xb)
            hits += correct(output, yb) if classification else 0
            n += len(xb)
        return total / n, (hits / n if classification else None)

    def alignment(
        self, x: Tensor, generator: torch.Generator, draws: int = DRAWS, batch: int = BATCH
    ) -> list[LayerAlignment]:
        """Per-layer alignment score of the bp and theory updates so far, with the shuffled control.

        ``x`` is an example input batch (for the layers' input shapes); see ``alignment_scores``.
        """
        return alignment_scores(self.bp, self.theory, self.initial, x, generator, draws, batch)
