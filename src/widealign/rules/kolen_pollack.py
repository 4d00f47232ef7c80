"""kolen-pollack: B receives the same update as W, both with weight decay (Akrout et al. 2019).

The error travels back through B (``grad_x = scale * B^T grad_y``, fa's transport) and, with
``G`` the true local weight gradient of the step and ``lambda`` the rule's ``weight_decay``,
``rule.backward`` adds

    W.grad += G + lambda * W
    B.grad += G + lambda * B                    (B: ``rule.feedback_parameters()``)

so that, with both in one plain-SGD optimiser at learning rate ``eta``,
``X <- (1 - eta*lambda) X - eta*G`` for X = W and X = B, and
``B_{t+1} - W_{t+1} = (1 - eta*lambda) (B_t - W_t)`` whatever ``G`` is: B converges to W. With
momentum (Akrout et al. train with it) the two get the same momentum step too, and ``B - W``
still only decays. ``lambda = 1e-4`` (Akrout et al.'s ImageNet weight decay). B starts as an
independent draw from the forward initialisation, like fa's.
"""

from __future__ import annotations

from torch import nn

from widealign.losses import Loss
from widealign.rules.learned import StoredFeedback
from widealign.rules.registry import register_rule


@register_rule
class KolenPollack(StoredFeedback):
    """B and W get the same update G plus weight decay, so B - W shrinks by (1 - lr*decay) per step."""

    name = "kolen-pollack"
    reads = "nothing"
    batchable = True

    def __init__(
        self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, weight_decay: float = 1e-4
    ) -> None:
        super().__init__(model, loss, seed)
        if not weight_decay >= 0:
            raise ValueError(f"weight decay must be non-negative, got {weight_decay}")
        self.weight_decay = float(weight_decay)

    def update_feedback(self, inputs: list | None) -> None:
        for i, layer in enumerate(self.layers):
            b = getattr(self, f"feedback_{i}")
            g = layer.weight.grad
            if g is None:  # a layer that took no part in this pass
                continue
            self.add_feedback_grad(i, g + self.weight_decay * b.detach())
            g.add_(layer.weight.detach(), alpha=self.weight_decay)
