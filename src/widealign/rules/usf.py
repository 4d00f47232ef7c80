"""usf: uniform sign-concordant feedback (Liao, Leibo & Poggio 2016, "sign symmetry").

Each synaptic layer passes the error back through the signs of its current weights,

    grad_x = scale * B^T grad_y,     B = s * sign(W),

with ``s`` the standard deviation of the forward initialisation (``1`` under the NTK
parameterisation, ``1/sqrt(fan_in)`` under the standard one), so that B has the scale of a
weight. The weight gradient is the true local one. Only the signs of W travel backwards; the
rule has no state and no hyperparameters.
"""

from __future__ import annotations

from torch import Tensor

from widealign.rules.learned import LearnedFeedback
from widealign.rules.registry import register_rule


@register_rule
class UniformSignFeedback(LearnedFeedback):
    """grad_x = B^T grad_y with B = s * sign(W): sign symmetry at the init scale (Liao et al. 2016)."""

    name = "usf"
    reads = "weight-sign"
    batchable = True

    def transport(self) -> list[Tensor]:
        return [layer.init_std * layer.weight.detach().sign() for layer in self.layers]
