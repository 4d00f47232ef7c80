"""brsf: batchwise random-magnitude sign-concordant feedback (Moskovitz, Litwin-Kumar & Abbott 2018).

    grad_x = scale * B_t^T grad_y,     B_t = |R_t| * sign(W_t),

with a fresh ``R_t`` from the forward initialisation at every batch (step ``t``). The draws come
from a stream of ``(seed, t)``; both are buffers, so a restored rule draws the numbers the saved
one would have.
"""

from __future__ import annotations

from torch import Tensor

from widealign.rules.learned import LearnedFeedback
from widealign.rules.registry import register_rule


@register_rule
class BatchRandomSignFeedback(LearnedFeedback):
    """grad_x = B^T grad_y with B = |R| * sign(W), R redrawn every batch (Moskovitz et al. 2018)."""

    name = "brsf"
    reads = "weight-sign"
    batchable = True

    def transport(self) -> list[Tensor]:
        draws = self.step_draws(
            "feedback", lambda g: [layer.sample_weight(g) for layer in self.layers], [0] * len(self.layers)
        )
        return [r.abs() * layer.weight.detach().sign() for r, layer in zip(draws, self.layers)]
