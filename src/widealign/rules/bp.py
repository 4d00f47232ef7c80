"""bp: ordinary backpropagation, ``g = dL/dtheta`` through the current network."""

from __future__ import annotations

from torch import Tensor

from widealign.rules.base import Rule
from widealign.rules.registry import register_rule


@register_rule
class Backprop(Rule):
    """g = dL/dtheta: the error travels back through the current weights (grad_x = W^T grad_y)."""

    name = "bp"
    reads = "weight"
    batchable = True

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        return loss, output
