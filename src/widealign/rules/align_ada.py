"""align-ada: the error travels back through the frozen initial network; each synapse updates
with its CURRENT presynaptic activity and its postsynaptic neurons' CURRENT local derivatives.

Default variant (``docs/method.md#align-ada``):

* run the current network with ``sg`` on the input of every synaptic layer (``u_{l-1}`` recorded);
* run the initial network where synaptic layer ``l`` receives ``u0_{l-1} + u_{l-1} - sg(u_{l-1})``
  (the initial network's value, gradient routed into the current network);
* minimise ``L(f + f0 - sg(f0))`` with respect to the current parameters only.

The readout gets its true local gradient; hidden layer ``l`` gets
``dW_l = (current neuron-local Jacobian)^T delta0_l  (x)  u_{l-1}``, where ``delta0_l`` is the
initial network's backpropagated error at ``u0_l``. At theta = theta_0 this is backprop. For an RNN
the current ``h_{t-1}`` is injected wherever the initial recurrence reads its state (the recurrent
layer's input at every step) and the current ``h_t`` at the readout.

``variant="reference"`` reproduces the authors' code (``docs/method.md#variants``):

* feed-forward models (train_kmnist.py, train_cifar.py): the current value is injected at each
  hidden layer's *pre-activation* (the model's ``"preactivation"`` taps: ``z0 + z - sg(z)`` before
  the ReLU, so ``phi'`` there is the initial network's) and at the readout's input (the pooled
  map for the conv net), and nowhere else. At theta_0 it is still backprop.
* the RNN (train_add.py): the current state is injected only where the initial recurrence reads
  its previous state, not at the readout, and the initial RNN starts from the CURRENT trainable
  ``h0``. The output error of step ``t`` therefore reaches the current network's ``h_t`` only
  through the initial recurrence at later steps, so this variant differs from backprop even at
  theta_0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Route, routed, taps
from widealign.rules.base import InitialNetwork, InitialState, RecordInputs, Rule, is_recurrent
from widealign.rules.registry import register_rule


class _Inject(Route):
    """The initial network's k-th call of layer ``i`` gets ``u0 + u - sg(u)`` (u its current twin),
    for the layers in ``at`` (every layer when ``at`` is None); its k-th ``"preactivation"`` tap
    gets ``z0 + z - sg(z)`` when ``preactivations`` are given."""

    def __init__(
        self,
        current: list[list[Tensor]],
        at: set[int] | None = None,
        preactivations: list[Tensor] | None = None,
    ) -> None:
        self.current, self.at, self.preactivations = current, at, preactivations
        self.calls = [0] * len(current)

    def input(self, index: int, x0: Tensor) -> Tensor:
        u = self.current[index][self.calls[index]]
        self.calls[index] += 1
        if (self.at is not None and index not in self.at) or not u.requires_grad:
            return x0
        return x0 + (u - u.detach())

    def tap(self, kind: str, index: int, z0: Tensor) -> Tensor:
        if kind != "preactivation" or self.preactivations is None:
            return z0
        z = self.preactivations[index]
        return z0 + (z - z.detach())


@register_rule
class AlignAda(InitialState, Rule):
    """dW_l = (current local Jacobian)^T delta0_l x current input: error via theta_0, local terms current."""

    name = "align-ada"
    reads = "nothing"
    batchable = True
    variants = ("default", "reference")

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", variant: str = "default") -> None:
        super().__init__(model, loss, variant)
        self.initial = InitialNetwork(model)
        if variant == "reference":
            if is_recurrent(model):
                if not hasattr(model, "recurrent") or not hasattr(model, "h0"):
                    raise ValueError("reference align-ada on a recurrent model needs `recurrent` and `h0`")
                self._state_layer = next(i for i, m in enumerate(self.layers) if m is model.recurrent)
            elif not taps(model, "preactivation") and len(self.layers) > 2:
                raise ValueError(
                    "reference align-ada needs the model's pre-activations marked with "
                    f"Tap('preactivation'); {type(model).__name__} has none"
                )

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        record = RecordInputs(len(self.layers))
        with routed(self.model, record):
            output = self.model(x)
        tensors = self.initial.tensors()
        if self.variant == "default":
            inject = _Inject(record.inputs)
        elif is_recurrent(self.model):
            inject = _Inject(record.inputs, at={self._state_layer})
            tensors = tensors | {"h0": self.model.h0.detach()}
        else:
            pre = record.taps.get("preactivation", [])
            inject = _Inject(record.inputs, at={len(self.layers) - 1}, preactivations=pre)
        with routed(self.model, inject):
            output0 = torch.func.functional_call(self.model, tensors, (x,))
        loss = self.loss_fn(output + (output0 - output0.detach()), y)
        loss.backward()
        return loss, output
