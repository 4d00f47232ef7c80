"""Loss functions by name, and the error ``e = dL/df`` that every rule starts from.

``mse`` is the paper's loss, ``mean((f - y)^2)`` over batch and outputs; integer class labels
(what torchvision data sets and most DataLoaders yield) are turned into the paper's targets first,
one-hot rows minus 0.1 (:func:`label_targets`), so ``y`` may be labels of shape ``(batch,)`` or
targets shaped like ``f``. ``ce`` is cross-entropy
against the target's argmax. ``sequence-mse`` is the Add task's ``sum_t mean_batch (o_t - y_t)^2``
(outputs of shape batch x time x 1; summed over outputs too). ``half-sse`` is
``(1/2) sum_i (f_i - y_i)^2``, whose error is ``e_i = f_i - y_i`` (Song et al.,
docs/method.md#song-xu-and-lafferty).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from widealign.suggest import did_you_mean

Loss = Callable[[Tensor, Tensor], Tensor]


#: What the paper's targets add to one-hot rows (one-hot minus 0.1).
TARGET_OFFSET = -0.1


def label_targets(f: Tensor, y: Tensor) -> Tensor:
    """``y`` as float targets for outputs ``f``: integer class labels (one dimension fewer than ``f``)
    become one-hot rows over ``f``'s last axis plus :data:`TARGET_OFFSET`, in ``f``'s dtype; float
    targets are returned unchanged."""
    if y.is_floating_point():
        return y
    if y.dim() != f.dim() - 1:
        raise ValueError(
            f"integer targets must be class labels with one dimension fewer than the outputs; "
            f"got labels of shape {tuple(y.shape)} for outputs of shape {tuple(f.shape)}"
        )
    return F.one_hot(y.long(), f.shape[-1]).to(f.dtype) + TARGET_OFFSET


def mse(f: Tensor, y: Tensor) -> Tensor:
    """The paper's squared error, averaged over batch and outputs (labels: see :func:`label_targets`)."""
    return (f - label_targets(f, y)).square().mean()


def cross_entropy(f: Tensor, y: Tensor) -> Tensor:
    """Softmax cross-entropy; ``y`` may be class indices or (shifted) one-hot rows."""
    return F.cross_entropy(f, y if y.dim() == 1 else y.argmax(-1))


def sequence_mse(f: Tensor, y: Tensor) -> Tensor:
    """Sum over time (and outputs) of the batch-mean squared error (docs/method.md#experiments, Add task)."""
    return (f - y).square().sum(dim=tuple(range(1, f.dim()))).mean()


def half_sse(f: Tensor, y: Tensor) -> Tensor:
    """Half the summed squared error, so that ``dL/df_i = f_i - y_i`` (full-batch gradient flow)."""
    return 0.5 * (f - y).square().sum()


LOSSES: dict[str, Loss] = {
    "mse": mse,
    "ce": cross_entropy,
    "sequence-mse": sequence_mse,
    "half-sse": half_sse,
}


def get_loss(loss: str | Loss) -> Loss:
    """A loss function from its name (or the function itself)."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(did_you_mean("loss", loss, LOSSES))
    return LOSSES[loss]


def loss_and_error(loss_fn: Loss, f: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The loss at ``f`` and the error ``e = dL/df`` (detached), without touching ``f``'s graph."""
    f = f.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(f, y)
        (e,) = torch.autograd.grad(loss, f)
    return loss.detach(), e
