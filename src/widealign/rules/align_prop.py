"""align-prop: feedback alignment whose feedback matrices are the initial forward weights.

    grad_x = scale * W_l(0)^T grad_y,     grad_W = scale * grad_y x^T (current input),

i.e. fa with ``B = W(0)``. At the first step (``W = W(0)``) it is exactly backprop; in the
infinite-width limit the weights barely move, so it stays backprop (docs/method.md#learning-rules).
"""

from __future__ import annotations

from torch import Tensor

from widealign.rules.fa import FeedbackAlignment
from widealign.rules.registry import register_rule


@register_rule
class AlignProp(FeedbackAlignment):
    """grad_x = W_l(0)^T grad_y: fa whose feedback is the initial forward weights (copied at creation)."""

    name = "align-prop"
    reads = "nothing"
    batchable = True

    def initial_feedback(self, seed: int) -> list[Tensor]:
        """Copies of the current (initial) forward weights."""
        return [layer.weight.detach().clone() for layer in self.layers]
