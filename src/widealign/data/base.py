"""The in-memory dataset container every loader returns, and seeded mini-batching.

Data sets that fit in memory are held as tensors (on the training device once moved there), so
an epoch is never bound by data loading. Targets follow the paper's conventions (docs/method.md):
classification targets are one-hot rows shifted by ``target_offset`` (-0.1 for CIFAR-10/KMNIST),
and the class is their argmax.

Evaluation batches come in one fixed shuffled order (:func:`eval_order`), the same for every rule,
seed and epoch: the paper's normalisation uses batch statistics at evaluation too, so accuracy
depends on which examples share a batch, and a class-sorted file (ImageNet's val folder) would
otherwise give batches of one or two classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from widealign.seeding import generator

#: Seed of the evaluation order (not the run's seed: every run is evaluated on the same batches).
EVAL_ORDER_SEED = 0


def eval_order(n: int) -> Tensor:
    """The fixed shuffled order in which ``n`` examples are evaluated (drawn on the CPU)."""
    return torch.randperm(n, generator=generator(EVAL_ORDER_SEED, "eval-order"))


@dataclass(frozen=True)
class Dataset:
    """Train and held-out tensors plus what a model and a loss need to know about them.

    Attributes:
        name: the data set's name (``digits``, ``add``, ...).
        x_train, y_train, x_test, y_test: inputs and targets.
        task: ``"classification"`` (accuracy is reported) or ``"regression"``.
        num_classes: classes for classification, output size otherwise.
        default_loss: the paper's loss for this data (``mse`` or ``sequence-mse``).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    task: str
    num_classes: int
    default_loss: str = "mse"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (channels, height, width for images)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Size of a model's output for this data."""
        return self.y_train.shape[-1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """A copy on ``device`` with floating tensors in ``dtype``."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
        )

    def train_batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled training mini-batches (the order drawn from ``generator``)."""
        return batches(self.x_train, self.y_train, batch_size, generator)

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Held-out mini-batches in the fixed shuffled order of :func:`eval_order`."""
        return batches(self.x_test, self.y_test, batch_size, order=eval_order(self.n_test))

    def train_eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole training set in the fixed shuffled order of :func:`eval_order`, to evaluate it."""
        return batches(self.x_train, self.y_train, batch_size, order=eval_order(self.n_train))

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    def subset(self, n: int) -> Dataset:
        """The first ``n`` training examples (the paper's low-data experiments)."""
        if not 0 < n <= len(self.x_train):
            raise ValueError(f"subset size must be in 1..{len(self.x_train)}, got {n}")
        return replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])


def shifted_one_hot(labels: Tensor, num_classes: int, offset: float = -0.1) -> Tensor:
    """One-hot rows plus ``offset`` (the paper's targets: one-hot minus 0.1)."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).float() + offset


def batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
    order: Tensor | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches in a random order drawn from ``generator``, or in the given ``order`` of indices
    (file order when both are None).

    The last batch may be smaller. The permutation is drawn on the CPU so that the order does not
    depend on the device.
    """
    n = len(x)
    if order is None:
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
