"""information-alignment: B learns a local objective on the layer's own activity (Kunin et al. 2020).

Transport as fa's (``grad_x = scale * B^T grad_y``). After each step's backward pass, with ``x``
the layer's inputs of the step (detached), B takes one SGD step on

    R = alpha * amp + beta * null + gamma * decay          (see :mod:`widealign.rules.primitives`)
      = -alpha mean_n <A_B x_n, A_W x_n> + beta mean_n ||A_B^T A_W x_n||^2 + gamma (||W_e||^2 + ||B_e||^2)

``B <- B - lr * dR/dB``. amp pulls B towards W through the input's correlations, null removes
from B what sends the forward response back into the input space, decay keeps B bounded.
Defaults ``alpha = 2e-3, beta = 1e-3, gamma = 1e-3`` (Kunin et al.'s information alignment),
``lr`` the run's learning rate. A layer called several times per pass (an RNN's recurrent layer)
averages R over its calls.
"""

from __future__ import annotations

from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Synaptic
from widealign.rules import primitives
from widealign.rules.learned import ObjectiveFeedback
from widealign.rules.registry import register_rule


@register_rule
class InformationAlignment(ObjectiveFeedback):
    """B learns R = alpha*amp + beta*null + gamma*decay on the layer's activity (Kunin et al. 2020)."""

    name = "information-alignment"
    reads = "nothing"
    batchable = True
    records_inputs = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        lr: float | None = None,
        alpha: float = 2e-3,
        beta: float = 1e-3,
        gamma: float = 1e-3,
    ) -> None:
        super().__init__(model, loss, seed, lr)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        w = layer.weight.detach()
        activity = sum(
            self.alpha * primitives.amp(layer, w, b, x) + self.beta * primitives.null(layer, w, b, x)
            for x in inputs
        ) / max(len(inputs), 1)
        return activity + self.gamma * primitives.decay(layer, w, b)
