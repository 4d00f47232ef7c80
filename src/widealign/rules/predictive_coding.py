"""predictive-coding: Millidge, Tschantz, Seth & Buckley 2020, "Relaxing the Constraints on
Predictive Coding Models" (docs/relaxation.md, section 2).

Value nodes ``x_l`` (one per hidden layer input ``u_l``) predict the next layer,
``mu_{l+1} = f_l(L_l(x_l))``, with prediction errors ``eps_l = x_l - V_l mu_l`` (``V_l = I`` in the
standard form). The input is clamped to the data, the output node to the target; for a general
loss the target is ``f - e`` (``e = dL/df``), which is ``y`` itself for the half squared error.
Inference descends the energy ``F = sum_l |eps_l|^2 / 2`` by Euler steps,

    x_l <- x_l + (step / 2) * clip(2 (-eps_l + s_l B_l^T (f_l'(a_l) * eps_{l+1})), +-clamp),

all layers at once, value nodes starting at the feedforward pass, for at most ``iterations`` steps
and until one step changes the value nodes by at most ``tol`` relative to the prediction errors'
size (:func:`~widealign.rules.layerwise.settled`; ``tol=0`` runs them all). Under the fixed-prediction
assumption (``fixed_predictions=True``, the authors' code's default) the predictions ``mu`` and the
Jacobians stay at their feedforward values; with ``step=1`` the errors then equal backprop's,
``eps_l = -dL/du_l``, after as many iterations as there are hidden layers. ``fixed_predictions=False``
recomputes predictions from the current value nodes at every step (the original dynamics). Then
each layer updates locally, ``grad W_l = -s_l (f_l'(a_l) * eps_{l+1}) x_l^T``.

Options (the authors' code's defaults, docs/relaxation.md cites file and line): ``iterations=500``,
``step=0.02`` (their inference rate 0.01 times the factor 2 of their update), ``clamp=1000`` (their
clamps of the value-node increment, the weight updates and the error-weight update, each at 1000);
``tol=1e-3`` (ours, measured). The paper's three relaxations: ``feedback="learned"`` (backward
weights ``B_l``, buffers ``feedback_i``, that receive the forward weights' update,
``B_l <- B_l - feedback_lr_scale * lr * grad W_l``); ``derivatives=False`` (no ``f'`` in the
backward term of the inference dynamics); ``error_connectivity="learned"`` (error units see their
prediction through a learned matrix ``V_l``, buffers ``error_weight_i``, mixing features or conv
channels, initialised ``|N(0, error_std^2)|`` and updated
``V_l <- V_l - error_lr_scale * lr * clip(sum_batch eps_l mu_l^T, +-clamp)``). ``lr`` is the run's
learning rate (1 without one): the authors step the backward and error weights with the forward
rate. Feed-forward models only. :meth:`step_stats` gives ``relax_iterations``.
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


def _mix(v: Tensor, t: Tensor) -> Tensor:
    """``V t`` over the feature (or channel) axis 1."""
    return t @ v.T if t.dim() == 2 else torch.einsum("oc,nc...->no...", v, t)


def _correlate(eps: Tensor, mu: Tensor) -> Tensor:
    """``sum_batch eps mu^T`` over the feature (or channel) axis, summed over positions."""
    return eps.T @ mu if eps.dim() == 2 else torch.einsum("no...,nc...->oc", eps, mu)


@register_rule
class PredictiveCoding(FeedbackState, Rule):
    """Value nodes minimise prediction errors by inference steps, then each layer learns locally."""

    name = "predictive-coding"
    reads = "weight"
    reads_settings = (("feedback=learned", "nothing"),)
    supports_recurrent = False
    feedback_replaces_weight = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        iterations: int = 500,
        step: float = 0.02,
        tol: float = 1e-3,
        clamp: float = 1000.0,
        fixed_predictions: bool = True,
        feedback: str = "exact",
        derivatives: bool = True,
        error_connectivity: str = "identity",
        feedback_lr_scale: float = 1.0,
        error_lr_scale: float = 1.0,
        error_std: float = 0.05,
        lr: float | None = None,
    ) -> None:
        super().__init__(model, loss)
        self.chain = Chain(model, self.name)
        check_choice("feedback", feedback, ("exact", "learned"))
        check_choice("error connectivity", error_connectivity, ("identity", "learned"))
        check_relaxation(self.name, int(iterations), float(tol))
        if not float(clamp) > 0:
            raise ValueError(f"{self.name}: clamp must be positive, got {clamp}")
        self.iterations, self.step, self.tol, self.clamp = (
            int(iterations),
            float(step),
            float(tol),
            float(clamp),
        )
        self.fixed_predictions, self.derivatives = bool(fixed_predictions), bool(derivatives)
        self.feedback_kind, self.error_connectivity = feedback, error_connectivity
        rate = 1.0 if lr is None else float(lr)
        self.feedback_lr, self.error_lr = float(feedback_lr_scale) * rate, float(error_lr_scale) * rate
        self.iterations_used = 0
        g = generator(seed, "feedback")
        learned = feedback == "learned"
        self._init_feedback(
            [None] + [layer.sample_weight(g) if learned else None for layer in self.layers[1:]]
        )
        ge = generator(seed, "error-connectivity")
        self.num_error_weights = len(self.layers) - 1
        for i, layer in enumerate(self.layers[1:], start=1):
            v = None
            if error_connectivity == "learned":
                d = layer.weight.shape[1]
                v = torch.randn(d, d, generator=ge, dtype=layer.weight.dtype).abs() * float(error_std)
                v = v.to(layer.weight.device)
            self.register_buffer(f"error_weight_{i}", v)

    @property
    def weight_transport(self) -> bool:
        """Whether inference reads the current forward weights (``feedback="exact"``)."""
        return self.feedback_kind == "exact"

    @classmethod
    def reads_for(cls, options: dict, variant: str = "default", recurrent: bool = False) -> str:
        """Exact feedback is the current weights; learned feedback reads none of them."""
        return "nothing" if options.get("feedback", "exact") == "learned" else "weight"

    def _matrix(self, index: int) -> Tensor:
        b = self.feedback[index]
        return self.layers[index].weight.detach() if b is None else b

    def _predict(self, value: Tensor, index: int, mu: Tensor) -> Tensor:
        v = getattr(self, f"error_weight_{index}")
        return value - (mu if v is None else _mix(v, mu))

    def _predictions(self, xs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        acts, mus = [], [xs[0]]
        for index, layer in enumerate(self.layers):
            acts.append(layer(xs[index]))
            if index < len(self.layers) - 1:
                mus.append(self.chain.stage(index, acts[-1]))
        return acts, mus

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        chain, top = self.chain, len(self.layers) - 1
        u, a = chain.forward(x)
        output = a[-1]
        loss = self.loss_fn(output, y)
        (e,) = torch.autograd.grad(loss, output, retain_graph=True)
        with torch.no_grad():
            target = output.detach() - e
            xs = [t.detach().clone() for t in u]
            acts, mus = [t.detach() for t in a], [t.detach() for t in u]
            backs = [chain.transpose_map(i, self._matrix(i), xs[i]) for i in range(top + 1)]
            stages = [chain.stage_map(i, acts[i], self.derivatives) for i in range(top)]
            if self.fixed_predictions:
                eps, n = self._infer_fixed(self._errors(xs, mus, acts, target), backs, stages)
            else:
                eps, mus, n = self._infer(xs, target, backs)
            self.iterations_used = n
        if self.fixed_predictions:
            local_update(u, a, [-t for t in eps[1:-1]], -eps[-1])
        else:
            with torch.enable_grad():
                u2, a2 = [xs[0]], []
                for index, layer in enumerate(self.layers):
                    a2.append(layer(xs[index]))
                    if index < top:
                        u2.append(chain.stage(index, a2[-1]))
            local_update(u2, a2, [-t for t in eps[1:-1]], -eps[-1])
        for layer in self.layers:
            for p in layer.parameters():
                if p.grad is not None:
                    p.grad.clamp_(-self.clamp, self.clamp)
        self._learn_connections(eps, mus)
        return loss, output

    def step_stats(self) -> dict[str, float]:
        """``relax_iterations``: the inference steps the last step ran."""
        return {"relax_iterations": float(self.iterations_used)}

    def _infer_fixed(self, eps: list[Tensor], backs: list, stages: list) -> tuple[list[Tensor], int]:
        """Inference under fixed predictions: ``d eps_l / d x_l = I``, so the errors themselves are
        stepped, ``eps_l <- eps_l + step * clip(-eps_l + s_l B_l^T (f_l' * eps_{l+1}), +-clamp/2)``
        (the clip of ``2 dx`` at ``clamp`` written without the factor 2); returns the errors and the
        iterations run."""
        top, half = len(self.layers) - 1, self.clamp / 2
        for n in range(1, self.iterations + 1):
            changes = []
            for layer in range(1, top + 1):
                drive = backs[layer](eps[-1] if layer == top else stages[layer](eps[layer + 1]))
                changes.append(drive.sub_(eps[layer]).clamp_(-half, half))
            for layer, change in enumerate(changes, start=1):
                eps[layer].add_(change, alpha=self.step)
            if self.tol > 0 and n % CHECK_EVERY == 0 and settled(changes, eps[1:], self.tol):
                break
        return eps, n

    def _infer(self, xs: list[Tensor], target: Tensor, backs: list) -> tuple[list[Tensor], list[Tensor], int]:
        """Inference with predictions recomputed from the value nodes at every step (``xs`` in place);
        returns the final errors, predictions and the iterations run."""
        chain, top, half = self.chain, len(self.layers) - 1, self.clamp / 2
        for n in range(1, self.iterations + 1):
            acts, mus = self._predictions(xs)
            stages = [chain.stage_map(i, acts[i], self.derivatives) for i in range(top)]
            eps = self._errors(xs, mus, acts, target)
            changes = []
            for layer in range(1, top + 1):
                drive = backs[layer](eps[-1] if layer == top else stages[layer](eps[layer + 1]))
                changes.append(drive.sub_(eps[layer]).clamp_(-half, half))
            for layer, change in enumerate(changes, start=1):
                xs[layer].add_(change, alpha=self.step)
            if self.tol > 0 and n % CHECK_EVERY == 0 and settled(changes, eps[1:], self.tol):
                break
        acts, mus = self._predictions(xs)
        return self._errors(xs, mus, acts, target), mus, n

    def _errors(
        self, xs: list[Tensor], mus: list[Tensor], acts: list[Tensor], target: Tensor
    ) -> list[Tensor]:
        """``[None, eps_1, ..., eps_{L-1}, eps_out]``."""
        hidden = [self._predict(xs[i], i, mus[i]) for i in range(1, len(self.layers))]
        return [None, *hidden, target - acts[-1]]

    def _learn_connections(self, eps: list[Tensor], mus: list[Tensor]) -> None:
        if self.feedback_kind == "learned":
            learned_feedback_step(self, self.feedback_lr)
        if self.error_connectivity == "learned":
            with torch.no_grad():
                for i in range(1, len(self.layers)):
                    delta = _correlate(eps[i], mus[i]).clamp_(-self.clamp, self.clamp)
                    getattr(self, f"error_weight_{i}").sub_(self.error_lr * delta)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, iterations={self.iterations}, step={self.step}, tol={self.tol}, "
            f"fixed_predictions={self.fixed_predictions}, feedback={self.feedback_kind}, "
            f"derivatives={self.derivatives}, error_connectivity={self.error_connectivity}"
        )
