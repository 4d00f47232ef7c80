"""Update alignment while training: how close a rule is to backprop, layer by layer.

For synaptic layer ``l`` (forward order, readout last), on a fixed probe batch:

* ``cos_bp/l``  = <g_rule, g_bp> / (|g_rule| |g_bp|), the cosine between the rule's weight update
  and the true backprop gradient of the same network on the same batch (0 if either is zero or
  missing, e.g. a layer the readout rule freezes);
* ``angle_fb/l`` = arccos(<B_l, W_l> / (|B_l| |W_l|)) in degrees, between the feedback matrix and the
  current forward weight, for rules whose feedback replaces W backwards (fa, align-prop);
* ``dist_init/l`` = |W_l(t) - W_l(0)| / |W_l(0)|, the relative distance from initialisation.

Norms are Frobenius norms of whole weight tensors; sums are computed in float64. Measuring
``cos_bp`` costs one pass of the rule and one of bp; the model's ``.grad``, parameters and buffers
are left as they were, so measuring never changes training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from widealign.models.layers import synaptic_layers
from widealign.rules.base import Rule
from widealign.rules.bp import Backprop

if TYPE_CHECKING:
    from widealign.train.loop import Trainer


def _cosine(a: Tensor | None, b: Tensor | None) -> float:
    if a is None or b is None:
        return 0.0
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else 0.0


def _weight_grads(model: nn.Module) -> list[Tensor | None]:
    return [
        None if layer.weight.grad is None else layer.weight.grad.clone() for layer in synaptic_layers(model)
    ]


def update_cosines(rule: Rule, x: Tensor, y: Tensor) -> list[float]:
    """Per synaptic layer, the cosine between ``rule``'s weight update and bp's gradient on ``(x, y)``.

    Runs ``rule.backward`` and a bp pass on the rule's model, then restores the model's ``.grad``
    and buffers (batch-norm running statistics), and the ``.grad`` of the rule's learned feedback,
    so the model is left exactly as it was.
    """
    model = rule.model
    params = [*model.parameters(), *rule.feedback_parameters()]
    saved_grads = [p.grad for p in params]
    saved_buffers = [b.clone() for b in model.buffers()]
    try:
        for p in params:
            p.grad = None
        rule.backward(x, y)
        mine = _weight_grads(model)
        for p in params:
            p.grad = None
        Backprop(model, rule.loss_fn).backward(x, y)
        bp = _weight_grads(model)
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
        with torch.no_grad():
            for b, saved in zip(model.buffers(), saved_buffers):
                b.copy_(saved)
    return [_cosine(a, b) for a, b in zip(mine, bp)]


def feedback_angles(rule: Rule) -> list[float | None]:
    """Per synaptic layer, the angle in degrees between the rule's feedback matrix and ``W``.

    Defined for rules whose feedback matrix replaces ``W`` in the backward pass
    (``rule.feedback_replaces_weight``: fa, align-prop); None for every layer of other rules. dfa's
    matrices map the output error to a layer's output, so they are not compared with ``W``.
    """
    if not rule.feedback_replaces_weight:
        return [None] * len(rule.layers)
    matrices = rule.feedback
    angles: list[float | None] = []
    for b, layer in zip(matrices, rule.layers):
        if b is None or b.shape != layer.weight.shape:
            angles.append(None)
            continue
        cosine = max(-1.0, min(1.0, _cosine(b, layer.weight)))
        angles.append(math.degrees(math.acos(cosine)))
    return angles


def weight_snapshot(model: nn.Module) -> list[Tensor]:
    """Copies of the synaptic layers' weights (take it at initialisation for ``dist_init``)."""
    return [layer.weight.detach().clone() for layer in synaptic_layers(model)]


def distances_from_init(model: nn.Module, initial_weights: list[Tensor]) -> list[float]:
    """Per synaptic layer, ``|W(t) - W(0)| / |W(0)|`` (Frobenius norms), ``W(0)`` given in layer order."""
    layers = synaptic_layers(model)
    if len(initial_weights) != len(layers):
        raise ValueError(f"expected {len(layers)} initial weights, got {len(initial_weights)}")
    distances = []
    for layer, w0 in zip(layers, initial_weights):
        w0 = w0.detach().double()
        distances.append(float((layer.weight.detach().double() - w0).norm() / w0.norm()))
    return distances


def update_alignment(rule: Rule, x: Tensor, y: Tensor, initial_weights: list[Tensor]) -> dict[str, float]:
    """``cos_bp/l``, ``angle_fb/l`` (rules with feedback) and ``dist_init/l`` as a flat dict."""
    record: dict[str, float] = {}
    for i, c in enumerate(update_cosines(rule, x, y)):
        record[f"cos_bp/{i}"] = c
    for i, angle in enumerate(feedback_angles(rule)):
        if angle is not None:
            record[f"angle_fb/{i}"] = angle
    for i, d in enumerate(distances_from_init(rule.model, initial_weights)):
        record[f"dist_init/{i}"] = d
    return record


def update_alignment_metric(
    model: nn.Module, x: Tensor, y: Tensor, initial_weights: list[Tensor] | None = None
) -> Callable[[Trainer], dict[str, float]]:
    """A ``Trainer`` ``epoch_metrics`` function measuring :func:`update_alignment` on a probe batch.

    ``W(0)`` is ``initial_weights`` or, by default, a snapshot of ``model`` taken now: create the
    metric before training starts (or from a freshly initialised model before resuming). The
    probe batch ``(x, y)`` is fixed so that epochs are compared on the same examples.
    """
    initial = (
        weight_snapshot(model) if initial_weights is None else [w.detach().clone() for w in initial_weights]
    )

    def metric(trainer: Trainer) -> dict[str, float]:
        if trainer.model is not model:
            raise ValueError("this metric was created for a different model than the trainer's")
        return update_alignment(trainer.rule, x, y, initial)

    return metric
