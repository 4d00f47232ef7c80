"""information-alignment: B learns a local objective on the layer's own activity (Kunin et al. 2020).

Transport as fa's (``grad_x = scale * B^T grad_y``). After each step's backward pass, with ``x``
the layer's inputs of the step (detached) and ``b`` the layer's bias, the rule adds ``dR/dB`` to
``B.grad`` (``rule.feedback_parameters()``, stepped by the user's optimiser) for

    R = alpha * amp + beta * null + gamma * decay          (see :mod:`widealign.rules.primitives`)
      = -alpha mean_n <A_B x_n + b, A_W x_n + b> + beta mean_n ||A_B^T (A_W x_n + b)||^2
        + gamma (||W_e||^2 + ||B_e||^2)

amp pulls B towards W through the input's correlations, null removes from B what sends the
forward response back into the input space, decay keeps B bounded. The bias enters both
projections as in Kunin et al.'s code (``use_bias_forward``/``use_bias_backward`` default true,
``flags.py`` lines 558-566; ``Alignments/alignment.py`` lines 106-110 and 118-126);
``bias=False`` leaves it out (widealign's earlier version, ours). Defaults ``alpha = 2e-3,
beta = 1e-3, gamma = 1e-3`` (Kunin et al.'s information alignment, ``params.py`` lines 359-365).
A layer called several times per pass (an RNN's recurrent layer) averages R over its calls.
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
        alpha: float = 2e-3,
        beta: float = 1e-3,
        gamma: float = 1e-3,
        bias: bool = True,
    ) -> None:
        super().__init__(model, loss, seed)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        #: Whether the layer's bias enters amp and null (Kunin et al.'s code: yes).
        self.bias = bool(bias)

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        w = layer.weight.detach()
        c = layer.bias.detach() if self.bias and layer.bias is not None else None
        activity = sum(
            self.alpha * primitives.amp(layer, w, b, x, c) + self.beta * primitives.null(layer, w, b, x, c)
            for x in inputs
        ) / max(len(inputs), 1)
        return activity + self.gamma * primitives.decay(layer, w, b)
