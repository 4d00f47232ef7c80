"""fa: feedback alignment (Lillicrap et al. 2016).

Each synaptic layer passes the error back through a fixed random matrix instead of its weight,

    grad_x = scale * B^T grad_y,     B ~ the forward weights' initial distribution,

and computes its own weight gradient as usual from its current input, ``scale * grad_y x^T``.
The matrices ``feedback_i`` (one per synaptic layer, PyTorch weight layout) are buffers.
"""

from __future__ import annotations

from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Route, Synaptic, routed
from widealign.rules.base import FeedbackState, Rule
from widealign.rules.registry import register_rule
from widealign.seeding import generator


class _Feedback(Route):
    def __init__(self, matrices: list[Tensor]) -> None:
        self.matrices = matrices

    def feedback(self, index: int, layer: Synaptic) -> Tensor:
        return self.matrices[index]


@register_rule
class FeedbackAlignment(FeedbackState, Rule):
    """grad_x = B_l^T grad_y, B_l fixed and drawn independently from the forward init distribution."""

    name = "fa"
    reads = "nothing"
    batchable = True
    feedback_replaces_weight = True

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0) -> None:
        super().__init__(model, loss)
        self._init_feedback(self.initial_feedback(seed))

    def initial_feedback(self, seed: int) -> list[Tensor]:
        """Independent draws from each layer's weight distribution."""
        g = generator(seed, "feedback")
        return [layer.sample_weight(g) for layer in self.layers]

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with routed(self.model, _Feedback(self.feedback)):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        return loss, output
