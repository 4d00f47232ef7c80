"""Batched runs: K runs of one rule and architecture trained as one stacked model.

The paper's grids are many small runs (5 seeds, 9 learning rates, widths 8 to 64) that leave the
machine mostly waiting between small kernels. :class:`BatchedTrainer` takes K ordinary
:class:`~widealign.train.loop.Trainer` objects, built exactly as for separate runs (same model
seeds, rule state, optimiser and shuffling generator), and trains them together:

* the models become one stacked model (:func:`widealign.models.stacked.stack_models`) and the rule
  one rule on it whose state is the members' state stacked (``theta_0``, feedback matrices);
* each step, member k draws its own batch from its own shuffling generator, the batches are stacked
  along the members' input axis, and one forward and one backward pass give every member's update:
  the loss is ``sum_k L(f^(k), y^(k))``, and since nothing couples the members, the gradient of
  member k's block is exactly ``dL(f^(k), y^(k)) / d theta^(k)``;
* every member's parameters take its own optimiser step: plain SGD with its own learning rate
  (the update ``-lr_k g`` is applied blockwise), or Adam with a learning rate the members share;
  a rule's learned feedback matrices (``rule.feedback_parameters()``, stacked like the weights)
  are in that optimiser, after the model's parameters, as in each member's own optimiser;
* after every epoch the stacked state is split back into the member trainers, which record their
  history and write their own checkpoints, so each run's folder is what a separate run writes and
  a separate run can resume it.

A member whose loss becomes NaN or infinite stops there, as a separate run would (its last
checkpoint is the epoch before); the others go on, since the diverged member's values never enter
their blocks. The members' numbers equal their separate runs' up to floating-point rounding in the
grouped kernels (a test checks every batchable rule in float64).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from widealign.losses import Loss
from widealign.models.stacked import (
    StackedState,
    member_axis,
    member_outputs,
    set_tensor,
    split_state,
    stack_inputs,
    stack_models,
)
from widealign.rules import make_rule
from widealign.storage import save_atomic
from widealign.train.loop import DivergedError, EpochRecord, Trainer, correct

#: Rule buffers that are a member's own constants rather than shared state (learned-feedback seeds).
_OWN_RULE_SCALARS = ("seed",)


class MemberLoss:
    """``sum_k L(f^(k), y^(k))`` over the members' blocks of a stacked output; ``y`` stacks the
    members' targets along a new first axis."""

    def __init__(self, loss: Loss, size: int) -> None:
        self.loss, self.size = loss, size

    def __call__(self, f: Tensor, y: Tensor) -> Tensor:
        return sum(self.loss(fk, y[k]) for k, fk in enumerate(member_outputs(f, self.size)))


def check_batchable(trainers: Sequence[Trainer]) -> None:
    """Raise a one-line ``ValueError`` unless ``trainers`` can train as one batched run."""
    if not trainers:
        raise ValueError("a batched run needs at least one member")
    first = trainers[0]
    rule = first.rule
    if not rule.batchable:
        raise ValueError(f"{rule.name} cannot train in a batched run (its runs train one at a time)")
    for t in trainers:
        if type(t.rule) is not type(rule) or t.rule.variant != rule.variant:
            raise ValueError("the members of a batched run must share one rule and variant")
        if t.batch_size != first.batch_size or t.data is not first.data:
            raise ValueError("the members of a batched run must share one data set and batch size")
        if t.epoch != first.epoch:
            raise ValueError(
                f"the members of a batched run must be at one epoch, not {t.epoch} and {first.epoch}"
            )
        if t.epoch_metrics:
            raise ValueError("a batched run takes no per-epoch diagnostics (epoch_metrics)")
        if t.autocast is not None:
            raise ValueError("a batched run trains without autocast (autocast runs train one at a time)")
        if t.compile:
            raise ValueError("a batched run is not compiled (compiled runs train one at a time)")
        if t.scheduler is not None:
            raise ValueError(
                "a batched run trains at fixed learning rates (scheduled runs train one at a time)"
            )
        if not hasattr(t.data, "train_batches") or not hasattr(t.data, "x_train"):
            raise ValueError("a batched run needs an in-memory data set")
    kinds = {type(t.optimizer) for t in trainers}
    if len(kinds) != 1 or next(iter(kinds)) not in (torch.optim.SGD, torch.optim.Adam):
        raise ValueError("a batched run needs one optimiser for all members: plain SGD or Adam")
    for t in trainers:
        for group in t.optimizer.param_groups:
            if isinstance(t.optimizer, torch.optim.SGD) and (group["momentum"] or group["weight_decay"]):
                raise ValueError("a batched run supports plain SGD (no momentum, no weight decay)")
    if isinstance(first.optimizer, torch.optim.Adam) and len(_learning_rates(trainers)) > 1:
        raise ValueError("batched Adam runs must share a learning rate")


def _learning_rates(trainers: Sequence[Trainer]) -> set[float]:
    return {float(g["lr"]) for t in trainers for g in t.optimizer.param_groups}


class BatchedTrainer:
    """Trains the members ``trainers`` (see the module docstring) as one stacked model.

    Args:
        trainers: ordinary trainers of the runs, each with its own model, rule, optimiser, seed,
            checkpoint and configuration, sharing one in-memory data set, batch size and rule.
        rule_options: the rule's construction arguments besides model and loss (``variant`` and
            the rule's own options), so that the stacked rule is built like the members'.
        progress: show a progress bar.
    """

    def __init__(
        self, trainers: Sequence[Trainer], rule_options: dict[str, Any] | None = None, progress: bool = True
    ) -> None:
        check_batchable(trainers)
        self.members = list(trainers)
        self.size = len(self.members)
        self.progress = progress
        first = self.members[0]
        self.axis = member_axis(first.model)
        for t in self.members:
            t.rule.prepare(first.data.x_train[:1])
        self.model = stack_models([t.model for t in self.members])
        self.model.train()
        self._rule_layout = StackedState([t.rule.state_dict() for t in self.members], own=_OWN_RULE_SCALARS)
        options = dict(rule_options or {})
        self.rule = make_rule(
            type(first.rule), self.model, MemberLoss(first.rule.loss_fn, self.size), **options
        )
        # The stacked rule was built with state of its own, shaped for one member where it was
        # drawn per block: give every entry the stacked shape, then load (which also restores the
        # Python-side copies some rules keep, such as a step counter).
        stacked = self._rule_layout.stacked()
        for name, value in stacked.items():
            if isinstance(value, Tensor):
                set_tensor(self.rule, name, value.clone())
        self.rule.load_state_dict(stacked)
        self._copy_settings()
        if hasattr(self.rule, "member_seeds"):  # rules that draw at every step: each member its own
            self.rule.member_seeds = [int(t.rule.seed) for t in self.members]
        self.optimizer, self._lr = self._stacked_optimizer()
        self.diverged: dict[int, DivergedError] = {}

    def _copy_settings(self) -> None:
        """Give the stacked rule the members' own settings (a learned-feedback rule's decay, an
        iteration count): plain public values, which the members must share."""
        for name, value in vars(self.members[0].rule).items():
            if (
                name.startswith("_")
                or name in ("seed", "training")
                or not isinstance(value, int | float | str)
            ):
                continue
            values = {getattr(t.rule, name) for t in self.members}
            if len(values) > 1:
                raise ValueError(
                    f"the members of a batched run must share the rule's {name} (got {sorted(values)})"
                )
            setattr(self.rule, name, value)

    def _stacked_optimizer(self) -> tuple[torch.optim.Optimizer, Tensor | None]:
        """One optimiser over the stacked parameters, and the members' learning rates when they
        differ (then the stacked SGD has lr 1 and each block's gradient is scaled by its own)."""
        first = self.members[0].optimizer
        params = self.parameters()
        rates = [float(t.optimizer.param_groups[0]["lr"]) for t in self.members]
        if isinstance(first, torch.optim.SGD):
            if len(set(rates)) == 1:
                return torch.optim.SGD(params, lr=rates[0]), None
            ref = params[0]
            return torch.optim.SGD(params, lr=1.0), torch.tensor(rates, dtype=ref.dtype, device=ref.device)
        optimizer = torch.optim.Adam(params, **{k: v for k, v in first.defaults.items() if k != "params"})
        states = [t.optimizer.state_dict() for t in self.members]
        if states[0]["state"]:
            stacked = {
                index: StackedState([s["state"][index] for s in states]).stacked()
                for index in states[0]["state"]
            }
            optimizer.load_state_dict(
                {"state": stacked, "param_groups": optimizer.state_dict()["param_groups"]}
            )
        return optimizer, None

    def parameters(self) -> list[Tensor]:
        """What the stacked optimiser steps: the model's parameters, then the rule's feedback."""
        return [*self.model.parameters(), *self.rule.feedback_parameters()]

    def _write_back(self) -> None:
        """Split the stacked model, rule and optimiser state back into the live member trainers."""
        models = split_state(self.model.state_dict(), self.size)
        rules = self._rule_layout.split(self.rule.state_dict())
        stacked = self.optimizer.state_dict()["state"]
        optimizers = {i: split_state(v, self.size) for i, v in stacked.items()}
        for k in self.live:
            t = self.members[k]
            t.model.load_state_dict(models[k])
            t.rule.load_state_dict(rules[k])
            if optimizers:
                groups = t.optimizer.state_dict()["param_groups"]
                t.optimizer.load_state_dict(
                    {"state": {i: v[k] for i, v in optimizers.items()}, "param_groups": groups}
                )

    def scale_updates(self) -> None:
        """Multiply each member's block of ``.grad`` by its learning rate, where the members' rates
        differ (the stacked SGD then steps with lr 1: ``theta^(k) <- theta^(k) - lr_k g^(k)``)."""
        if self._lr is None:
            return
        for p in self.parameters():
            if p.grad is not None:
                blocks = p.grad.unflatten(0, (self.size, -1))
                blocks.mul_(self._lr.view(-1, *[1] * (blocks.dim() - 1)))

    @property
    def live(self) -> list[int]:
        """The members still training (not diverged)."""
        return [k for k in range(self.size) if k not in self.diverged]

    def _stacked_batches(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterable[tuple[Tensor, Tensor]]:
        """One batch sequence shared by every member (held-out data), repeated into each block."""
        for xb, yb in batches:
            yield stack_inputs([xb] * self.size, self.axis), yb

    @torch.no_grad()
    def _evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> list[tuple[float | None, float | None]]:
        """Every member's mean loss and accuracy over the same batches (as :func:`evaluate` does)."""
        loss_fn = self.members[0].rule.loss_fn
        classification = self.members[0].classification
        self.model.eval()
        totals, hits, n = [0.0] * self.size, [0] * self.size, 0
        for xb, yb in self._stacked_batches(batches):
            for k, out in enumerate(member_outputs(self.model(xb), self.size)):
                totals[k] += float(loss_fn(out, yb)) * len(yb)
                hits[k] += correct(out, yb) if classification else 0
            n += len(yb)
        self.model.train()
        if n == 0:
            return [(None, None)] * self.size
        return [(totals[k] / n, hits[k] / n if classification else None) for k in range(self.size)]

    def train_epoch(self) -> list[tuple[float, float | None]]:
        """One pass over every member's shuffled training set; each member's mean loss and accuracy."""
        first = self.members[0]
        loss_fn, classification = first.rule.loss_fn, first.classification
        streams = [t.data.train_batches(t.batch_size, t.shuffle) for t in self.members]
        totals, hits, n = [0.0] * self.size, [0] * self.size, 0
        epoch = first.epoch + 1
        for step, batches in enumerate(zip(*streams, strict=True)):
            xs, ys = zip(*batches)
            self.optimizer.zero_grad(set_to_none=True)
            _, output = self.rule.backward(stack_inputs(xs, self.axis), torch.stack(ys))
            outs = member_outputs(output, self.size)
            for k in self.live:
                loss = float(loss_fn(outs[k], ys[k]))
                if not math.isfinite(loss):
                    self.diverged[k] = DivergedError(epoch, step, loss)
                    continue
                totals[k] += loss * len(ys[k])
                hits[k] += correct(outs[k], ys[k]) if classification else 0
            if not self.live:
                break
            self.scale_updates()
            self.optimizer.step()
            n += len(ys[0])
        if n == 0 and self.live:
            raise ValueError("the training data yielded no batches")
        return [
            (totals[k] / max(n, 1), hits[k] / max(n, 1) if classification else None) for k in range(self.size)
        ]

    def fit(
        self, epochs: int, on_epoch: Callable[[int, EpochRecord], None] | None = None
    ) -> dict[int, DivergedError]:
        """Train every member until ``epochs`` epochs are complete; returns the diverged members.

        ``on_epoch(k, record)`` is called for member k after each of its epochs, once its trainer
        holds the epoch's state and its checkpoint is written.
        """
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        first = self.members[0]
        bar = tqdm(
            total=epochs, initial=first.epoch, desc=f"{first.rule.name} x{self.size}", unit="epoch",
            disable=not self.progress,
        )  # fmt: skip
        with bar:
            while self.live and self.members[self.live[0]].epoch < epochs:
                start = time.perf_counter()
                train = self.train_epoch()
                seconds = time.perf_counter() - start
                live = self.live
                if not live:
                    break
                held_out = self._evaluate(first.data.test_batches(first.batch_size))
                train_eval = None
                if first.eval_train:
                    train_eval = self._evaluate(first.data.train_eval_batches(first.batch_size))
                self._write_back()
                for k in live:
                    t = self.members[k]
                    extra = None
                    if train_eval is not None:
                        extra = {"train_eval_loss": train_eval[k][0], "train_eval_acc": train_eval[k][1]}
                    record = EpochRecord(t.epoch + 1, *train[k], *held_out[k], seconds, extra)
                    t.history.append(record)
                    if t.checkpoint is not None:
                        save_atomic(t.state_dict(), t.checkpoint)
                    if on_epoch is not None:
                        on_epoch(k, record)
                bar.update()
        return self.diverged
