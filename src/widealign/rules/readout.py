"""readout: only the final synaptic layer learns, with its true gradient; the rest is frozen.

Every synaptic layer sees ``sg(input)``, so ``L`` depends on the parameters only through the
readout's own ``W_L``, ``b_L``: ``g_L = dL/dW_L`` and every other parameter gets no gradient.
"""

from __future__ import annotations

from torch import Tensor

from widealign.models.layers import routed
from widealign.rules.base import Rule, StopGradient


class Readout(Rule):
    """g_L = dL/dW_L for the readout only; every other layer stays frozen (random features)."""

    name = "readout"

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with routed(self.model, StopGradient()):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        return loss, output
