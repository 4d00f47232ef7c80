"""readout: only the final synaptic layer learns, with its true gradient; the rest is frozen.

Every synaptic layer sees ``sg(input)``, so ``L`` depends on the parameters only through the
readout's own ``W_L``, ``b_L``: ``g_L = dL/dW_L`` and every other parameter gets no gradient.

``variant="reference"`` (train_add.py, ``docs/method.md#variants``) differs on the RNN only: the
trainable initial state ``h0`` learns too, with its true gradient ``dL/dh0`` through the current
network. On feed-forward models the two variants are the same rule.
"""

from __future__ import annotations

from torch import Tensor

from widealign.models.layers import routed
from widealign.rules.base import Rule, StopGradient, is_recurrent
from widealign.rules.registry import register_rule


@register_rule
class Readout(Rule):
    """g_L = dL/dW_L for the readout only; every other layer stays frozen (random features)."""

    name = "readout"
    reads = "nothing"
    reads_settings = (("variant=reference, model=rnn", "weight"),)
    batchable = True
    variants = ("default", "reference")

    @classmethod
    def reads_for(cls, options: dict, variant: str = "default", recurrent: bool = False) -> str:
        """The reference variant's ``h0`` learns through the current RNN: it reads the weights."""
        return "weight" if variant == "reference" and recurrent else "nothing"

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.variant == "reference" and is_recurrent(self.model):
            return self._readout_and_initial_state(x, y)
        with routed(self.model, StopGradient()):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        return loss, output

    def _readout_and_initial_state(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Backprop, then keep the gradients of the readout and of ``h0`` only."""
        output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        keep = {id(p) for p in self.layers[-1].parameters()} | {id(self.model.h0)}
        for p in self.model.parameters():
            if id(p) not in keep:
                p.grad = None
        return loss, output
