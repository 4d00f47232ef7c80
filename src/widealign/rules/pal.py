"""pal-simplified: phaseless alignment learning (Max, Kriener, Pineda Garcia, Nowotny, Jaras, Senn &
Petrovici; docs/relaxation.md, section 3), simplified to discrete time: one step per batch, white
noise on the rates. The paper's neurons run in continuous time with Ornstein-Uhlenbeck (low-pass
filtered) noise on their potentials; this rule keeps its learning rule and drops those dynamics,
hence the name.

Errors travel backwards through learned matrices ``B_l`` as in feedback alignment,
``dL/du_l = s_l B_l^T (f_l'(a_l) * dL/du_{l+1})``, while every hidden rate carries noise: the input of
synaptic layer ``l >= 1`` is ``u_l = f_{l-1}(a_{l-1}) + xi_l``, ``xi_l ~ N(0, sigma^2)`` drawn afresh
each step for every example. The noise is always on (no separate phase): the loss, the errors and the
forward weights' local updates all come from the noisy pass. The part of layer ``l``'s drive that the
noise causes, ``h_l = s_l W_l xi_l``, stands for the paper's high-pass filtered activity and teaches
the feedback with the paper's rule

    B_l <- B_l + feedback_lr * ( <h_l xi_l^T> / s_l - regularizer * B_l ),

``<.>`` the mean over the batch (and positions, for a conv). Since ``<xi xi^T> = sigma^2 I``, its
fixed point is ``B_l = (sigma^2 / regularizer) W_l``: aligned with the forward weights, and equal to
them with the defaults. Options (ours for discrete time; the authors' continuous-time code uses
``sigma=1e-2``, ``regularizer=1e-3``, a feedback rate of 1 and ``dt = 0.1``): ``sigma=0.1``,
``regularizer=0.01``, ``feedback_lr=5.0``. ``B_l`` (buffers ``feedback_i``, drawn like fa's) and the
step count (buffer ``steps``, which selects the noise draw) are the rule's state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.rules.base import FeedbackState, Rule
from widealign.rules.layerwise import Chain, local_update
from widealign.rules.registry import register_rule
from widealign.seeding import generator


@register_rule
class PhaselessAlignment(FeedbackState, Rule):
    """fa whose feedback learns from white noise on the forward rates (PAL simplified): B_l -> W_l."""

    name = "pal-simplified"
    reads = "nothing"
    supports_recurrent = False
    feedback_replaces_weight = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        sigma: float = 0.1,
        regularizer: float = 0.01,
        feedback_lr: float = 5.0,
    ) -> None:
        super().__init__(model, loss)
        self.chain = Chain(model, self.name)
        self.seed, self.sigma = seed, float(sigma)
        self.regularizer, self.feedback_lr = float(regularizer), float(feedback_lr)
        g = generator(seed, "feedback")
        self._init_feedback([None] + [layer.sample_weight(g) for layer in self.layers[1:]])
        ref = self.layers[0].weight
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=ref.device))
        self.register_buffer("noise_seed", torch.tensor(int(seed), dtype=torch.long, device=ref.device))
        self._step = 0

    def noise(self, like: Tensor, index: int) -> Tensor:
        """The noise ``xi_index`` of this step, shaped like ``like`` (drawn on the CPU, then moved)."""
        g = generator(self.seed, f"pal-noise-{self._step}-{index}")
        xi = torch.randn(like.shape, generator=g, dtype=like.dtype) * self.sigma
        return xi.to(like.device)

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        chain, top = self.chain, len(self.layers) - 1
        u, a, xis = [chain.input(x)], [], [None]
        for index, layer in enumerate(self.layers):
            a.append(layer(u[-1].detach()))
            if index < top:
                rate = chain.stage(index, a[-1])
                xis.append(self.noise(rate, index + 1))
                u.append(rate + xis[-1])
        output = a[-1]
        loss = self.loss_fn(output, y)
        (e,) = torch.autograd.grad(loss, output, retain_graph=True)
        with torch.no_grad():
            deltas: list[Tensor] = [None] * (top + 1)
            upstream = e
            for index in range(top, 0, -1):
                deltas[index] = chain.transpose(index, upstream, self.feedback[index], u[index])
                if index > 1:
                    upstream = chain.stage_vjp(index - 1, a[index - 1].detach(), deltas[index])
        local_update(u, a, deltas[1:], e)
        with torch.no_grad():
            for index in range(1, top + 1):
                xi, layer = xis[index], self.layers[index]
                drive = chain.linear(index, xi)
                count = drive.shape[0] * drive[0, 0].numel()
                corr = chain.correlate(index, drive, xi) / (count * layer.scale)
                b = self.feedback[index]
                b.add_(self.feedback_lr * (corr - self.regularizer * b))
        self._step += 1
        self.steps.fill_(self._step)
        return loss, output

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "steps" in state_dict:
            self._step = int(state_dict[prefix + "steps"])
        if prefix + "noise_seed" in state_dict:
            self.seed = int(state_dict[prefix + "noise_seed"])

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, sigma={self.sigma}, regularizer={self.regularizer}, "
            f"feedback_lr={self.feedback_lr}"
        )
