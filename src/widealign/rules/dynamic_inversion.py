"""dynamic-inversion: Podlaski & Machens 2020 (docs/relaxation.md, section 4).

The error is sent backwards by inverting each synaptic layer through feedback dynamics instead of
transposing it. The output's desired change is ``delta_{L-1} = -e``; for each layer ``l`` from the
top down, a controller ``r_y`` (shaped like the layer's output) and the layer's input change
``r_x`` run ``iterations`` Euler steps of size ``dt`` from zero,

    r_y <- r_y + dt * (-alpha r_y + W_l r_x - delta_l)
    r_x <- r_x + dt * (-r_x + B_l r_y),

(``W_l r_x`` the layer's current linear map ``s_l W_l``, ``B_l = s_l F_l^T`` with ``F_l`` the buffer
``feedback_l``). At the fixed point ``r_x = B_l (W_l B_l - alpha I)^{-1} delta_l``, so that
``W_l r_x = delta_l`` when ``alpha = 0``: with ``B_l = -W_l^T`` it is the pseudo-inverse target
``W_l^+ delta_l``. The fixed point is stable when every eigenvalue of ``W_l B_l - alpha I`` has a
negative real part; the rule checks this at creation for dense layers and warns in one line when it
fails. The inverted signal then passes the stage below by its local derivative,
``delta_{l-1} = f_{l-1}'(a_{l-1})^T r_x``, and every layer updates locally with
``grad W_l = -s_l delta_l u_l^T``.

Options (the authors' MNIST runs: ``dt = 0.1``, leak 0 or 0.01, ``B = -W(0)^T``, 10,000 steps per
example; we default to fewer steps for cost): ``iterations=1000``, ``dt=0.1``, ``alpha=0.01``,
``feedback="negative-transpose"`` (``F_l = -W_l(0)``, fixed) or ``"random"`` (``F_l`` drawn like fa's,
fixed; usually unstable, hence the warning). Feed-forward models only.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Dense
from widealign.rules.base import FeedbackState, Rule
from widealign.rules.layerwise import Chain, check_choice, local_update
from widealign.rules.registry import register_rule
from widealign.seeding import generator


@register_rule
class DynamicInversion(FeedbackState, Rule):
    """Errors travel back by dynamically inverting each layer (pseudo-inverse as alpha -> 0)."""

    name = "dynamic-inversion"
    supports_recurrent = False

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        iterations: int = 1000,
        dt: float = 0.1,
        alpha: float = 0.01,
        feedback: str = "negative-transpose",
    ) -> None:
        super().__init__(model, loss)
        self.chain = Chain(model, self.name)
        check_choice("feedback", feedback, ("negative-transpose", "random"))
        self.iterations, self.dt, self.alpha, self.feedback_kind = (
            int(iterations),
            float(dt),
            float(alpha),
            feedback,
        )
        g = generator(seed, "feedback")
        if feedback == "random":
            matrices = [layer.sample_weight(g) for layer in self.layers[1:]]
        else:
            matrices = [-layer.weight.detach() for layer in self.layers[1:]]
        self._init_feedback([None, *matrices])
        self.check_stability()

    def stability(self) -> list[float | None]:
        """Per layer, the largest real part among the eigenvalues of ``W_l B_l - alpha I``.

        None where it is not computed: the input layer (never inverted), conv layers (the operator
        is too large to diagonalise) and tensors without values (the meta device).
        """
        out: list[float | None] = [None]
        for layer, f in zip(self.layers[1:], self.feedback[1:]):
            w = layer.weight.detach()
            if not isinstance(layer, Dense) or w.device.type == "meta":
                out.append(None)
                continue
            m = (layer.scale * w) @ (layer.scale * f.T) - self.alpha * torch.eye(
                w.shape[0], dtype=w.dtype, device=w.device
            )
            out.append(float(torch.linalg.eigvals(m).real.max()))
        return out

    def check_stability(self) -> None:
        """Warn (one line) when a layer's inversion dynamics are unstable."""
        bad = [(i, s) for i, s in enumerate(self.stability()) if s is not None and s >= 0]
        if bad:
            where = ", ".join(f"layer {i} ({s:.3g})" for i, s in bad)
            warnings.warn(
                f"dynamic-inversion: W B - alpha I has an eigenvalue with real part >= 0 at {where}; "
                "the inversion dynamics diverge (increase alpha or use feedback=negative-transpose)",
                RuntimeWarning,
                stacklevel=3,
            )

    def invert(self, index: int, delta: Tensor, like: Tensor) -> Tensor:
        """``r_x`` after the dynamics: layer ``index``'s input change for the output change ``delta``."""
        chain, layer = self.chain, self.layers[index]
        back = chain.transpose_map(index, self.feedback[index], like)
        if isinstance(layer, Dense):
            scaled = layer.weight.detach().T * layer.scale
            forward = lambda v: v @ scaled  # noqa: E731
        else:
            forward = lambda v: chain.linear(index, v)  # noqa: E731
        r_y, r_x = torch.zeros_like(delta), torch.zeros_like(like)
        for _ in range(self.iterations):
            r_y.mul_(1 - self.dt * self.alpha).add_(forward(r_x) - delta, alpha=self.dt)
            r_x.mul_(1 - self.dt).add_(back(r_y), alpha=self.dt)
        return r_x

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        chain, top = self.chain, len(self.layers) - 1
        u, a = chain.forward(x)
        output = a[-1]
        loss = self.loss_fn(output, y)
        (e,) = torch.autograd.grad(loss, output, retain_graph=True)
        with torch.no_grad():
            grads: list[Tensor] = [None] * (top + 1)
            delta = -e
            for index in range(top, 0, -1):
                r_x = self.invert(index, delta, u[index].detach())
                grads[index] = -r_x
                if index > 1:
                    delta = chain.stage_vjp(index - 1, a[index - 1].detach(), r_x)
        local_update(u, a, grads[1:], e)
        return loss, output

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, iterations={self.iterations}, dt={self.dt}, alpha={self.alpha}, "
            f"feedback={self.feedback_kind}"
        )
