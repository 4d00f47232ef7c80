"""symmetric-alignment: B learns decay + self, driving it to W (Kunin et al. 2020).

Transport as fa's (``grad_x = scale * B^T grad_y``). After each step's backward pass the rule adds
to ``B.grad`` (``rule.feedback_parameters()``, stepped by the user's optimiser) the gradient of

    R = alpha * decay + beta * self = alpha (||W_e||^2 + ||B_e||^2) - beta <W_e, B_e>

(see :mod:`widealign.rules.primitives`), ``dR/dB = scale^2 (2 alpha B - beta W)`` (in this closed
form), so that plain SGD at ``eta`` gives ``B <- B - eta * scale^2 (2 alpha B - beta W)``, whose
fixed point is ``B = beta/(2 alpha) W``. Defaults ``alpha = 1e-3, beta = 2e-3`` (Kunin et al.'s
symmetric alignment, fixed point ``B = W``).
"""

from __future__ import annotations

from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Synaptic
from widealign.rules import primitives
from widealign.rules.learned import ObjectiveFeedback
from widealign.rules.registry import register_rule


@register_rule
class SymmetricAlignment(ObjectiveFeedback):
    """B learns R = alpha*decay + beta*self, i.e. B -> beta/(2 alpha) W = W (Kunin et al. 2020)."""

    name = "symmetric-alignment"
    reads = "weight"
    batchable = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        alpha: float = 1e-3,
        beta: float = 2e-3,
    ) -> None:
        super().__init__(model, loss, seed)
        self.alpha, self.beta = float(alpha), float(beta)

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        w = layer.weight.detach()
        return self.alpha * primitives.decay(layer, w, b) + self.beta * primitives.self_(layer, w, b)

    def update_feedback(self, inputs: list[list[Tensor]] | None) -> None:
        """dR/dB = scale^2 (2 alpha B - beta W), without autograd (the objective's gradient)."""
        for i, layer in enumerate(self.layers):
            b = getattr(self, f"feedback_{i}").detach()
            self.add_feedback_grad(
                i, layer.scale**2 * (2 * self.alpha * b - self.beta * layer.weight.detach())
            )
