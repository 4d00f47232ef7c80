"""usf: uniform sign-concordant feedback (Liao, Leibo & Poggio 2016, "sign symmetry").

Each synaptic layer passes the error back through the signs of its current weights,

    grad_x = scale * B^T grad_y,     B = sign(W),

the unit sign, as Liao et al. define uSF (``magnitude="unit"``, the default). With
``magnitude="init-std"`` (ours, widealign's earlier version) ``B = s * sign(W)``, ``s`` the
standard deviation of the forward initialisation (``1`` under the NTK parameterisation, where the
two agree, ``1/sqrt(fan_in)`` under the standard one), so that B has the scale of a weight. The
weight gradient is the true local one. Only the signs of W travel backwards; the rule has no state.
"""

from __future__ import annotations

from torch import Tensor, nn

from widealign.losses import Loss
from widealign.rules.learned import LearnedFeedback
from widealign.rules.registry import register_rule

#: The magnitudes usf's feedback may take: Liao et al.'s unit sign, or the sign at the init scale.
MAGNITUDES = ("unit", "init-std")


@register_rule
class UniformSignFeedback(LearnedFeedback):
    """grad_x = B^T grad_y with B = sign(W), the unit sign (Liao et al. 2016)."""

    name = "usf"
    reads = "weight-sign"
    batchable = True

    def __init__(
        self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, magnitude: str = "unit"
    ) -> None:
        super().__init__(model, loss, seed)
        if magnitude not in MAGNITUDES:
            raise ValueError(f"usf: unknown magnitude {magnitude!r}; choose one of {', '.join(MAGNITUDES)}")
        self.magnitude = magnitude

    def transport(self) -> list[Tensor]:
        if self.magnitude == "unit":
            return [layer.weight.detach().sign() for layer in self.layers]
        return [layer.init_std * layer.weight.detach().sign() for layer in self.layers]
