"""brsf: batchwise random-magnitude sign-concordant feedback (Moskovitz, Litwin-Kumar & Abbott 2018).

    grad_x = scale * B_t^T grad_y,     B_t = |R_t| * sign(W_t),

with a fresh ``R_t`` from the forward initialisation at every batch (step ``t``). The draws come
from a stream of ``(seed, t)``; both are buffers, so a restored rule draws the numbers the saved
one would have.
"""

from __future__ import annotations

from torch import Tensor

from widealign.rules.learned import LearnedFeedback


class BatchRandomSignFeedback(LearnedFeedback):
    """grad_x = B^T grad_y with B = |R| * sign(W), R redrawn every batch (Moskovitz et al. 2018)."""

    name = "brsf"

    def transport(self) -> list[Tensor]:
        g = self.step_generator("feedback")
        return [layer.sample_weight(g).abs() * layer.weight.detach().sign() for layer in self.layers]
