"""frsf: fixed random-magnitude sign-concordant feedback (Moskovitz, Litwin-Kumar & Abbott 2018).

    grad_x = scale * B^T grad_y,     B = |R| * sign(W),

with ``R`` drawn once, at creation, from the forward initialisation (buffers ``magnitude_i``
hold ``|R|``), and the signs taken from the current weights at every step.
"""

from __future__ import annotations

from torch import Tensor, nn

from widealign.losses import Loss
from widealign.rules.learned import LearnedFeedback
from widealign.rules.registry import register_rule
from widealign.seeding import generator


@register_rule
class FixedRandomSignFeedback(LearnedFeedback):
    """grad_x = B^T grad_y with B = |R| * sign(W), R fixed from the init distribution (Moskovitz 2018)."""

    name = "frsf"
    reads = "weight-sign"
    batchable = True

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0) -> None:
        super().__init__(model, loss, seed)
        g = generator(seed, "feedback")
        for i, layer in enumerate(self.layers):
            self.register_buffer(f"magnitude_{i}", layer.sample_weight(g).abs())

    def transport(self) -> list[Tensor]:
        return [
            getattr(self, f"magnitude_{i}") * layer.weight.detach().sign()
            for i, layer in enumerate(self.layers)
        ]
