"""dfa: direct feedback alignment (Nokland 2016).

Each hidden layer's output ``u_l`` (the input of synaptic layer ``l+1``, flattened: all of C*H*W
for a conv map) receives the output error directly through a fixed random matrix,

    dL/du_l = B_l^T e,     B_l in R^{outputs x d_l},  entries N(0, 1/d_l),

which then passes the layer's own neuron-local derivative into its weights; inputs of synaptic
layers are ``sg``'d, so nothing else travels backwards, and the readout learns with its true local
gradient. Built as the reference does: ``out_grad = sum_l (B_l u_l - sg(B_l u_l))`` is added to the
outputs inside the loss. Feed-forward models only. ``B_l`` needs the sizes ``d_l``, so the matrices
are drawn at the first pass (or loaded by ``load_state_dict``/``set_feedback`` before it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import routed
from widealign.rules.base import FeedbackState, RecordInputs, Rule
from widealign.seeding import generator


class DirectFeedbackAlignment(FeedbackState, Rule):
    """dL/du_l = B_l^T e: the output error sent straight to every hidden layer (feedback_0 is None)."""

    name = "dfa"
    supports_recurrent = False

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0) -> None:
        super().__init__(model, loss)
        self.seed = seed
        self._init_feedback([None] * len(self.layers))

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        record = RecordInputs(len(self.layers))
        with routed(self.model, record):
            output = self.model(x)
        if any(len(calls) != 1 for calls in record.inputs):
            raise ValueError("dfa supports feed-forward models only (a synaptic layer ran more than once)")
        hidden = [calls[0].flatten(1) for calls in record.inputs[1:]]
        if self.feedback[1] is None:
            self._draw(output.shape[-1], [u.shape[1] for u in hidden], output)
        projection = sum(u @ b.T for u, b in zip(hidden, self.feedback[1:]))
        loss = self.loss_fn(output + (projection - projection.detach()), y)
        loss.backward()
        return loss, output

    def _draw(self, outputs: int, sizes: list[int], like: Tensor) -> None:
        g = generator(self.seed, "feedback")
        matrices = [torch.randn(outputs, d, generator=g, dtype=like.dtype) / d**0.5 for d in sizes]
        self.set_feedback([None, *matrices])
