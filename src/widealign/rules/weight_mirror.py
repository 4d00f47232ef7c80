"""weight-mirror: B learns from noise sent through the layer in a mirror phase (Akrout et al. 2019).

Transport as fa's (``grad_x = scale * B^T grad_y``). After each step's backward pass every
synaptic layer is driven, in a mirror phase, by zero-mean Gaussian noise ``xi ~ N(0, sigma^2)``
shaped like its input (``noise_std = sigma``); its output is ``y = A_W xi`` (the layer's linear
map, ``scale * W xi`` for a dense layer). The rule adds B's update direction to ``B.grad``
(``rule.feedback_parameters()``, stepped by the user's optimiser). Two variants, after the papers:

``variant="akrout"`` (the default; Akrout et al., *Deep learning without weight transport*,
NeurIPS 2019: the mirror mode, ``Delta B = eta_B * y xi^T`` with weight decay on B), written in
the weight's units and averaged over the noise batch::

    B.grad += mirror_rate * (weight_decay * B - mean_n y_n xi_n^T / scale)

(for a convolution ``y xi^T`` is the weight-gradient correlation of the two maps). With plain SGD
at ``eta`` that is ``B <- B + eta*mirror_rate * (mean y xi^T / scale - weight_decay * B)``; since
``E[y xi^T] / scale = sigma^2 W`` B turns towards W, to the fixed point
``B = sigma^2 / weight_decay * W`` whatever the parameterisation. Defaults (ours):
``mirror_rate = 0.01``, ``weight_decay = 1`` and ``noise_std = 1`` (so B tends to W).

``variant="kunin"`` (Kunin et al. 2020's weight mirror, ``Alignments/alignment.py`` lines
268-289): the gradient of ``R = alpha * decay + beta * amp`` on the noise
(:mod:`widealign.rules.primitives`),

    B.grad += dR/dB,   i.e.  B_e moves by -eta * (2*alpha*scale^2 B_e - beta*scale^2 * mean_n y_n xi_n^T)

(``B_e = scale * B``), fixed point ``B = beta/(2 alpha) W`` (with ``noise_std = 1``). Defaults
``alpha = beta = 1e-3`` (Kunin et al.'s, ``params.py`` lines 349 and 352).

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
    """B learns from noise xi through the layer, along (W xi) xi^T (Akrout 2019; Kunin 2020 variant)."""

    name = "weight-mirror"
    reads = "nothing"
    variants = ("akrout", "kunin")
    batchable = True
    records_inputs = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        variant: str = "default",
        mirror_rate: float = 0.01,
        weight_decay: float = 1.0,
        alpha: float = 1e-3,
        beta: float = 1e-3,
        noise_std: float = 1.0,
    ) -> None:
        super().__init__(model, loss, seed, variant)
        if not noise_std > 0:
            raise ValueError(f"weight-mirror: noise_std must be positive, got {noise_std}")
        if not mirror_rate > 0 or not weight_decay >= 0:
            raise ValueError(
                f"weight-mirror: mirror_rate must be positive and weight_decay non-negative, got "
                f"{mirror_rate} and {weight_decay}"
            )
        #: akrout's options.
        self.mirror_rate, self.weight_decay = float(mirror_rate), float(weight_decay)
        #: kunin's options.
        self.alpha, self.beta = float(alpha), float(beta)
        self.noise_std = float(noise_std)

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

        self._noise = [self.noise_std * xi for xi in self.step_draws("mirror", draws, axes)]
        super().update_feedback(inputs)

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        """kunin: ``alpha * decay + beta * amp``; akrout: a function whose gradient is the rule's
        ``B.grad`` term, ``mirror_rate * (weight_decay/2 ||B||^2 + amp / scale^2)``."""
        w = layer.weight.detach()
        xi = self._noise[index]
        if self.variant == "kunin":
            return self.alpha * primitives.decay(layer, w, b) + self.beta * primitives.amp(layer, w, b, xi)
        mirror = primitives.amp(layer, w, b, xi) / layer.scale**2
        return self.mirror_rate * (0.5 * self.weight_decay * b.square().sum() + mirror)
