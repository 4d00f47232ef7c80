"""align-ada: the error travels back through the frozen initial network; each synapse updates
with its CURRENT presynaptic activity and its postsynaptic neurons' CURRENT local derivatives.

Construction (SPEC section 3):

* run the current network with ``sg`` on the input of every synaptic layer (``u_{l-1}`` recorded);
* run the initial network where synaptic layer ``l`` receives ``u0_{l-1} + u_{l-1} - sg(u_{l-1})``
  (the initial network's value, gradient routed into the current network);
* minimise ``L(f + f0 - sg(f0))`` with respect to the current parameters only.

The readout gets its true local gradient; hidden layer ``l`` gets
``dW_l = (current neuron-local Jacobian)^T delta0_l  (x)  u_{l-1}``, where ``delta0_l`` is the
initial network's backpropagated error at ``u0_l``. At theta = theta_0 this is backprop.

The reference conv code injects before the activation of hidden layers, so there ``phi'`` comes
from the initial network; this implementation injects at synaptic inputs, as the SPEC states and
as the reference does for its RNN and last hidden layer. The two agree at initialisation and at
infinite width. For an RNN the current ``h_{t-1}`` is injected wherever the initial recurrence
reads its state (the recurrent layer's input at every step).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Route, routed
from widealign.rules.base import InitialNetwork, InitialState, RecordInputs, Rule


class _Inject(Route):
    """Layer ``i``'s k-th call in the initial network gets ``u0 + u - sg(u)``, u its current twin."""

    def __init__(self, current: list[list[Tensor]]) -> None:
        self.current = current
        self.calls = [0] * len(current)

    def input(self, index: int, x0: Tensor) -> Tensor:
        u = self.current[index][self.calls[index]]
        self.calls[index] += 1
        return x0 + (u - u.detach()) if u.requires_grad else x0


class AlignAda(InitialState, Rule):
    """dW_l = (current local Jacobian)^T delta0_l x current input: error via theta_0, local terms current."""

    name = "align-ada"

    def __init__(self, model: nn.Module, loss: str | Loss = "mse") -> None:
        super().__init__(model, loss)
        self.initial = InitialNetwork(model)

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        record = RecordInputs(len(self.layers))
        with routed(self.model, record):
            output = self.model(x)
        with routed(self.model, _Inject(record.inputs)):
            output0 = torch.func.functional_call(self.model, self.initial.tensors(), (x,))
        loss = self.loss_fn(output + (output0 - output0.detach()), y)
        loss.backward()
        return loss, output
