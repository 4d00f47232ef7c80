"""weight-mirror: B learns from noise sent through the layer in a mirror phase (Akrout et al. 2019).

Transport as fa's (``grad_x = scale * B^T grad_y``). After each step's backward pass, every
synaptic layer receives white noise ``xi ~ N(0, 1)`` shaped like its input, its output is
``zeta = A_W xi`` (the layer's map, no bias), and B takes one SGD step on Kunin et al.'s mirror
objective ``R = alpha * decay + beta * amp`` (see :mod:`widealign.rules.primitives`):

    B <- B - lr * dR/dB,   i.e.  B_e <- (1 - 2*lr*alpha*scale^2) B_e + lr*beta*scale^2 * mean_n zeta_n xi_n^T

(``B_e = scale * B``; for a convolution ``zeta xi^T`` is the weight-gradient correlation of the
two maps). Since ``E[zeta xi^T] = W_e``, B turns towards W, to the fixed point ``B = beta/(2 alpha) W``.
Defaults ``alpha = beta = 1e-3`` (Kunin et al.'s weight mirror), ``lr`` the run's learning rate.
The noise comes from a stream of (seed, step), both buffers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Conv2d, Synaptic
from widealign.rules import primitives
from widealign.rules.learned import ObjectiveFeedback
from widealign.rules.registry import register_rule


@register_rule
class WeightMirror(ObjectiveFeedback):
    """B learns B += lr*beta*E[zeta xi^T] - lr*2*alpha*B from noise xi and zeta = W xi (Akrout 2019)."""

    name = "weight-mirror"
    reads = "nothing"
    batchable = True
    records_inputs = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        lr: float | None = None,
        alpha: float = 1e-3,
        beta: float = 1e-3,
    ) -> None:
        super().__init__(model, loss, seed, lr)
        self.alpha, self.beta = float(alpha), float(beta)

    def update_feedback(self, inputs: list[list[Tensor]] | None) -> None:
        # Noise shaped like each layer's input; in a batched run, one member's block of it (the
        # channels of a conv layer's input, the last axis of a dense layer's).
        axes = [1 if isinstance(layer, Conv2d) else -1 for layer in self.layers]

        def draws(g: torch.Generator) -> list[Tensor]:
            out = []
            for calls, layer, axis in zip(inputs, self.layers, axes):
                shape = list(calls[0].shape)
                shape[axis] //= layer.members
                out.append(torch.randn(shape, generator=g, dtype=calls[0].dtype).to(calls[0].device))
            return out

        self._noise = self.step_draws("mirror", draws, axes)
        super().update_feedback(inputs)

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        w = layer.weight.detach()
        xi = self._noise[index]
        return self.alpha * primitives.decay(layer, w, b) + self.beta * primitives.amp(layer, w, b, xi)
