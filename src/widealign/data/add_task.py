"""The Add task of docs/method.md#experiments: a linear temporal filter of a random bit stream.

``x_t ~ Bernoulli(0.5)`` and ``y_t = 0.5 + 0.5 x_{t-2} - 0.25 x_{t-5}`` (terms before t = 0 are 0),
``T = 100``; 300 training and 100 test sequences, shaped (N, T, 1). The loss is
``sum_t mean_batch (o_t - y_t)^2``; a constant 0.5 predictor scores about 9.3.
"""

from __future__ import annotations

import torch
from torch import Tensor

from widealign.data.base import Dataset
from widealign.seeding import generator


def add_targets(x: Tensor) -> Tensor:
    """``y_t = 0.5 + 0.5 x_{t-2} - 0.25 x_{t-5}`` with zeros before the sequence starts."""

    def delayed(k: int) -> Tensor:
        return torch.nn.functional.pad(x[:, :-k], (0, 0, k, 0))

    return 0.5 + 0.5 * delayed(2) - 0.25 * delayed(5)


def make_add_task(n_train: int = 300, n_test: int = 100, length: int = 100, seed: int = 0) -> Dataset:
    """Bernoulli(0.5) input sequences and their Add-task targets, drawn from ``seed``."""
    if length <= 5:
        raise ValueError(f"the Add task needs sequences longer than 5 steps, got {length}")
    g = generator(seed, "add-task")
    x = torch.bernoulli(torch.full((n_train + n_test, length, 1), 0.5), generator=g)
    y = add_targets(x)
    return Dataset(
        name="add",
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train:],
        y_test=y[n_train:],
        task="regression",
        num_classes=1,
        default_loss="sequence-mse",
    )
