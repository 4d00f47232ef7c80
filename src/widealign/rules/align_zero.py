"""align-zero: the gradient through the frozen initial network, with the current error.

    g = J_{theta_0}(x)^T e,     e = dL/df at the CURRENT network's output f_theta(x),

where ``J_{theta_0}`` is the Jacobian of the initial network's output with respect to its own
parameters on the same batch (its own activations, derivatives and batch statistics). ``g`` is
applied to the current parameters. This is what the reference builds as the gradient w.r.t.
theta_0 of ``mean((sg(f_theta) + f_theta0 - sg(f_theta0) - y)^2)``. Cost: one forward pass of
the current network (no graph), one forward and one backward pass of the initial network.

``variant="reference"`` (train_add.py, ``docs/method.md#variants``) differs on the RNN only: the
initial RNN starts from the CURRENT trainable initial state ``h0`` instead of ``h0(0)``, and the
``h0`` block of ``g`` is the gradient through that initial RNN. On feed-forward models the two
variants are the same rule.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss, loss_and_error
from widealign.rules.base import InitialNetwork, InitialState, Rule, is_recurrent
from widealign.rules.registry import register_rule


@register_rule
class AlignZero(InitialState, Rule):
    """g = J_{theta_0}(x)^T e: the current error e backpropagated through the frozen initial network."""

    name = "align-zero"
    reads = "nothing"
    batchable = True
    variants = ("default", "reference")

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", variant: str = "default") -> None:
        super().__init__(model, loss, variant)
        self.initial = InitialNetwork(model)

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            output = self.model(x)
        loss, e = loss_and_error(self.loss_fn, output, y)
        self.apply_initial_vjp(x, e)
        return loss, output

    def apply_initial_vjp(self, x: Tensor, e: Tensor) -> None:
        """Set each current parameter's ``.grad`` to its block of ``J_{theta_0}(x)^T e``.

        Also the core of the "theory" rule (docs/method.md#theory-network), where ``e`` is another
        network's error.
        """
        tensors = self.initial.tensors()
        if self.variant == "reference" and is_recurrent(self.model):
            tensors["h0"] = self.model.h0.detach()
        theta0 = {n: tensors[n].detach().requires_grad_(True) for n in self.initial.parameter_names}
        output0 = torch.func.functional_call(self.model, tensors | theta0, (x,))
        grads = torch.autograd.grad(output0, list(theta0.values()), e, allow_unused=True)
        params = dict(self.model.named_parameters())
        for name, g in zip(theta0, grads):
            params[name].grad = g
