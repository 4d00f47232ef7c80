"""activation-relaxation: Millidge, Tschantz, Seth & Buckley 2020 (docs/relaxation.md, section 1).

After the forward pass (inputs ``u_l``, pre-activations ``a_l``) every hidden layer's activity
``x_l`` starts at its feedforward value ``u_l`` and relaxes, with the output node held at the
error ``e = dL/df``, under the Euler-discretised dynamics

    x_l <- x_l + step * (-x_l + s_l B_l^T (f_l'(a_l) * x_{l+1})),    x_L = e,

swept from the top layer down in each iteration (as in the authors' code), for at most
``iterations`` iterations and until one iteration changes the activities by at most ``tol``
relative (:func:`~widealign.rules.layerwise.settled`; ``tol=0`` runs them all). The Jacobians are
frozen at the feedforward pass. With ``B = W`` and the true ``f'`` the fixed point is
``x_l* = dL/du_l``, backprop's error, and the error of ``x_l`` shrinks by ``(1 - step)`` per
iteration (times a polynomial in the number of iterations for lower layers). Then every layer
updates locally, ``grad W_l = s_l (f_l'(a_l) * x_{l+1}) u_l^T`` (backprop's arithmetic with
``x_{l+1}`` in place of ``dL/du_{l+1}``).

Options (the authors' defaults): ``iterations=100``, ``step=0.1``; ``tol=1e-3`` (ours, measured);
the two relaxations of Millidge et al.'s follow-up: ``feedback="learned"`` uses backward weights
``B_l`` (buffers ``feedback_i``, drawn like fa's) that receive the forward weights' update,
``B_l <- B_l - feedback_lr_scale * lr * grad W_l`` (``lr`` the run's learning rate, as the authors
step them); ``derivatives=False`` drops ``f'`` from the relaxation
(``x_l <- x_l + step * (-x_l + s_l B_l^T x_{l+1})``; the local update keeps it).
``feedforward="relaxed"`` (the scalability paper's third relaxation) drops the frozen feedforward
pass: the derivatives in the relaxation and the update are taken at ``L_l(x_l)`` of the current,
relaxing activities, and the update uses ``x_l`` in place of the stored ``u_l``.
``start="zero"`` (ours) starts the relaxation at 0 instead of the feedforward activities: the
residual after ``n`` iterations is then ``~(1 - step)^n`` of the gradient rather than of the
activity, which matters when the loss is a mean over many outputs (the gradient is then far smaller
than the activity). Feed-forward models only (MLP, conv net, chains of dense layers).
:meth:`step_stats` gives ``relax_iterations``, the iterations the last step ran.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.rules.base import FeedbackState, Rule
from widealign.rules.layerwise import (
    CHECK_EVERY,
    Chain,
    check_choice,
    check_relaxation,
    learned_feedback_step,
    local_update,
    settled,
)
from widealign.rules.registry import register_rule
from widealign.seeding import generator


@register_rule
class ActivationRelaxation(FeedbackState, Rule):
    """Hidden activities relax to backprop's error (fixed point dL/du_l), then local updates."""

    name = "activation-relaxation"
    reads = "weight"
    reads_settings = (("feedback=learned", "nothing"),)
    supports_recurrent = False
    feedback_replaces_weight = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        iterations: int = 100,
        step: float = 0.1,
        tol: float = 1e-3,
        feedback: str = "exact",
        derivatives: bool = True,
        feedback_lr_scale: float = 1.0,
        start: str = "feedforward",
        feedforward: str = "frozen",
        lr: float | None = None,
    ) -> None:
        super().__init__(model, loss)
        self.chain = Chain(model, self.name)
        check_choice("feedback", feedback, ("exact", "learned"))
        check_choice("start", start, ("feedforward", "zero"))
        check_choice("feedforward", feedforward, ("frozen", "relaxed"))
        check_relaxation(self.name, int(iterations), float(tol))
        self.start, self.feedforward = start, feedforward
        self.iterations, self.step, self.feedback_kind = int(iterations), float(step), feedback
        self.tol = float(tol)
        self.derivatives = bool(derivatives)
        self.feedback_lr = float(feedback_lr_scale) * (1.0 if lr is None else float(lr))
        self.iterations_used = 0
        g = generator(seed, "feedback")
        learned = feedback == "learned"
        self._init_feedback(
            [None] + [layer.sample_weight(g) if learned else None for layer in self.layers[1:]]
        )

    @property
    def weight_transport(self) -> bool:
        """Whether the relaxation reads the current forward weights (``feedback="exact"``)."""
        return self.feedback_kind == "exact"

    @classmethod
    def reads_for(cls, options: dict, variant: str = "default", recurrent: bool = False) -> str:
        """Exact feedback is the current weights; learned feedback reads none of them."""
        return "nothing" if options.get("feedback", "exact") == "learned" else "weight"

    def _matrix(self, index: int) -> Tensor:
        b = self.feedback[index]
        return self.layers[index].weight.detach() if b is None else b

    def step_stats(self) -> dict[str, float]:
        """``relax_iterations``: the iterations the last step's relaxation ran."""
        return {"relax_iterations": float(self.iterations_used)}

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        chain, top = self.chain, len(self.layers) - 1
        relaxed = self.feedforward == "relaxed"
        u, a = chain.forward(x)
        output = a[-1]
        loss = self.loss_fn(output, y)
        (e,) = torch.autograd.grad(loss, output, retain_graph=True)
        with torch.no_grad():
            xs = [t.detach().clone() if self.start == "feedforward" else torch.zeros_like(t) for t in u]
            xs[0] = u[0].detach()
            stages = [chain.stage_map(i, a[i].detach(), self.derivatives) for i in range(top)]
            backs = [chain.transpose_map(i, self._matrix(i), xs[i]) for i in range(top + 1)]
            for n in range(1, self.iterations + 1):
                changes = []
                for layer in range(top, 0, -1):
                    upper = e if layer == top else xs[layer + 1]
                    if relaxed and layer < top:
                        stage = chain.stage_map(layer, self.layers[layer](xs[layer]), self.derivatives)
                        upper = stage(upper)
                    elif layer < top:
                        upper = stages[layer](upper)
                    change = (backs[layer](upper) - xs[layer]).mul_(self.step)
                    xs[layer].add_(change)
                    changes.append(change)
                if self.tol > 0 and n % CHECK_EVERY == 0 and settled(changes, xs[1:], self.tol * self.step):
                    break
            self.iterations_used = n
        if relaxed:
            with torch.enable_grad():
                u2, a2 = [xs[0]], []
                for index, layer in enumerate(self.layers):
                    a2.append(layer(xs[index]))
                    if index < top:
                        u2.append(chain.stage(index, a2[-1]))
            local_update(u2, a2, xs[1:], e)
        else:
            local_update(u, a, xs[1:], e)
        if self.feedback_kind == "learned":
            learned_feedback_step(self, self.feedback_lr)
        return loss, output

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, iterations={self.iterations}, step={self.step}, tol={self.tol}, "
            f"feedback={self.feedback_kind}, derivatives={self.derivatives}, feedforward={self.feedforward}"
        )
