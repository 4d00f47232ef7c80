"""dynamic-inversion: Podlaski & Machens 2020 (docs/relaxation.md, section 4).

The error is sent backwards by inverting each synaptic layer through feedback dynamics instead of
transposing it. The output's desired change is ``delta_{L-1} = -e``; for each layer ``l`` from the
top down, a controller ``r_y`` (shaped like the layer's output) and the layer's input change
``r_x`` run Euler steps of size ``dt`` from zero,

    r_y <- r_y + dt * (-alpha r_y + W_l r_x - delta_l)
    r_x <- r_x + dt * (-r_x + B_l r_y),

(``W_l r_x`` the layer's current linear map ``s_l W_l``, ``B_l = s_l F_l^T`` with ``F_l`` the buffer
``feedback_l``), at most ``iterations`` of them and until one changes ``(r_x, r_y)`` by at most ``tol``
relative. At the fixed point ``r_x = B_l (W_l B_l - alpha I)^{-1} delta_l``, so that
``W_l r_x = delta_l`` when ``alpha = 0``: with ``B_l = -W_l^T`` it is the pseudo-inverse target
``W_l^+ delta_l``. ``solver="closed-form"`` computes that fixed point directly (the authors' MNIST
script does; dense layers only), ``"dynamics"`` runs the dynamics, and the default ``"auto"`` takes
the closed form for dense layers and the dynamics for conv layers. The inverted signal passes the
stage below by its local derivative, ``delta_{l-1} = f_{l-1}'(a_{l-1})^T r_x``, and every layer
updates locally with
``grad W_l = -s_l delta_l u_l^T``.

Stability: the dynamics converge when every eigenvalue of their Jacobian
``M_l = [[-I, B_l], [W_l, -alpha I]]`` has a negative real part. As the authors do, the rule checks
this for dense layers during training (every ``stability_every`` steps; at creation too) and, when
it fails, adjusts ``B_l`` by descending the smoothed spectral abscissa of ``M_l`` until it is below
-0.01; every adjustment is counted (buffer ``adjustments``, per layer), logged
(``rule.adjustment_log``) and reported by :meth:`step_stats`. Defaults and their sources are in
docs/relaxation.md. Feed-forward models only.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Dense
from widealign.rules.base import FeedbackState, Rule
from widealign.rules.layerwise import (
    CHECK_EVERY,
    Chain,
    check_choice,
    check_relaxation,
    local_update,
    settled,
)
from widealign.rules.registry import register_rule
from widealign.seeding import generator


def abscissa(w: Tensor, b: Tensor, alpha: float) -> float:
    """The largest real part among the eigenvalues of ``M = [[-I, b], [w, -alpha I]]``.

    ``w`` (out x in) and ``b`` (in x out) are the scaled forward and backward maps. An eigenvalue
    ``lambda`` of ``M`` solves ``(lambda + 1)(lambda + alpha) = mu`` for an eigenvalue ``mu`` of the
    smaller of ``w b`` and ``b w``; the remaining ones are -1 (more inputs) or -alpha (more outputs),
    so only the smaller product is diagonalised.
    """
    out, inp = w.shape
    mu = torch.linalg.eigvals(w @ b if out <= inp else b @ w)
    root = torch.sqrt((1 + alpha) ** 2 - 4 * (alpha - mu))
    best = float(((-(1 + alpha) + root) / 2).real.max())
    if out != inp:
        best = max(best, -1.0 if inp > out else -alpha)
    return best


def _lyapunov(a: Tensor, c: Tensor) -> Tensor:
    """``X`` with ``a X + X a^T = c`` for a diagonalisable real ``a`` (through its eigenvectors)."""
    lam, v = torch.linalg.eig(a)
    vinv = torch.linalg.inv(v)
    inner = vinv @ c.to(v.dtype) @ vinv.T
    return (v @ (inner / (lam[:, None] + lam[None, :])) @ v.T).real


def ssa_step(w: Tensor, b: Tensor, alpha: float, shift: float) -> Tensor:
    """The normalised gradient of the smoothed spectral abscissa of ``M`` with respect to ``b``
    (Vanbiervliet et al. 2009): ``Q P / tr(Q P)`` restricted to ``b``'s block, where
    ``(M - sI)^T Q + Q (M - sI) = 2I`` and ``(M - sI) P + P (M - sI)^T = 2I``."""
    out, inp = w.shape
    m = torch.zeros(inp + out, inp + out, dtype=torch.float64)
    m[:inp, :inp] = -torch.eye(inp, dtype=torch.float64)
    m[:inp, inp:] = b
    m[inp:, :inp] = w
    m[inp:, inp:] = -alpha * torch.eye(out, dtype=torch.float64)
    a = m - shift * torch.eye(inp + out, dtype=torch.float64)
    two = 2 * torch.eye(inp + out, dtype=torch.float64)
    q = _lyapunov(a.T, two)
    p = _lyapunov(a, two)
    grad = q @ p
    return (grad / torch.trace(grad))[:inp, inp:]


@register_rule
class DynamicInversion(FeedbackState, Rule):
    """Errors travel back by dynamically inverting each layer (pseudo-inverse as alpha -> 0)."""

    name = "dynamic-inversion"
    reads = "weight"
    reads_settings = (("solver=dynamics, stability_every=0", "nothing"),)
    supports_recurrent = False

    @classmethod
    def reads_for(cls, options: dict, variant: str = "default", recurrent: bool = False) -> str:
        """The closed form (``W_l B_l``) and the stability check (the eigenvalues of ``W_l B_l``)
        read the weights; the dynamics apply them forwards only."""
        dynamics = options.get("solver", "auto") == "dynamics"
        return "nothing" if dynamics and options.get("stability_every", 1) == 0 else "weight"

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        iterations: int = 1000,
        dt: float = 0.1,
        alpha: float = 0.01,
        tol: float = 3e-4,
        solver: str = "auto",
        feedback: str = "negative-transpose",
        stability_every: int = 1,
        adjust_lr: float = 0.05,
        adjust_steps: int = 200,
    ) -> None:
        super().__init__(model, loss)
        self.chain = Chain(model, self.name)
        check_choice("feedback", feedback, ("negative-transpose", "random"))
        check_choice("solver", solver, ("auto", "dynamics", "closed-form"))
        check_relaxation(self.name, int(iterations), float(tol))
        if int(stability_every) < 0:
            raise ValueError(f"{self.name}: stability_every must be >= 0, got {stability_every}")
        if solver == "closed-form" and not all(isinstance(layer, Dense) for layer in self.layers[1:]):
            raise ValueError(f"{self.name}: solver closed-form supports dense layers only")
        self.iterations, self.dt, self.alpha, self.feedback_kind = (
            int(iterations),
            float(dt),
            float(alpha),
            feedback,
        )
        self.tol, self.solver, self.stability_every = float(tol), solver, int(stability_every)
        self.adjust_lr, self.adjust_steps = float(adjust_lr), int(adjust_steps)
        self.iterations_used = 0
        self.adjusted = 0
        #: One entry per adjustment: ``(step, layer, abscissa before, abscissa after)``.
        self.adjustment_log: list[tuple[int, int, float, float]] = []
        g = generator(seed, "feedback")
        if feedback == "random":
            matrices = [layer.sample_weight(g) for layer in self.layers[1:]]
        else:
            matrices = [-layer.weight.detach() for layer in self.layers[1:]]
        self._init_feedback([None, *matrices])
        ref = self.layers[0].weight
        self.register_buffer(
            "adjustments", torch.zeros(len(self.layers), dtype=torch.long, device=ref.device)
        )
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=ref.device))
        self._step = 0
        if self.stability_every > 0:
            self.stabilise()
        else:
            self.check_stability()

    def _maps(self, index: int) -> tuple[Tensor, Tensor]:
        """Layer ``index``'s scaled forward and backward maps ``(s W, s F^T)`` in float64."""
        layer = self.layers[index]
        w = (layer.scale * layer.weight.detach()).double().cpu()
        return w, (layer.scale * self.feedback[index].T).double().cpu()

    def stability(self) -> list[float | None]:
        """Per layer, the largest real part among the eigenvalues of the dynamics' Jacobian
        ``[[-I, B_l], [W_l, -alpha I]]`` (negative: the inversion converges).

        None where it is not computed: the input layer (never inverted), conv layers (the operator
        is too large to diagonalise) and tensors without values (the meta device).
        """
        out: list[float | None] = [None]
        for index, layer in enumerate(self.layers[1:], start=1):
            if not isinstance(layer, Dense) or layer.weight.device.type == "meta":
                out.append(None)
                continue
            out.append(abscissa(*self._maps(index), self.alpha))
        return out

    def stabilise(self) -> int:
        """Adjust every unstable dense layer's ``B_l`` as the authors do; returns how many were adjusted.

        Smoothed-spectral-abscissa descent on ``B_l`` (step ``adjust_lr``, at least 10 and at most
        ``adjust_steps`` steps, until the abscissa is below -0.01), each adjustment counted and logged.
        """
        adjusted = 0
        for index, before in enumerate(self.stability()):
            if before is None or before <= 0:
                continue
            w, b = self._maps(index)
            s, steps = before, 0
            while steps < 10 or (s > -0.01 and steps < self.adjust_steps):
                b = b - self.adjust_lr * ssa_step(w, b, self.alpha, s + 1e-2)
                s, steps = abscissa(w, b, self.alpha), steps + 1
            layer = self.layers[index]
            f = self.feedback[index]
            f.copy_((b.T / layer.scale).to(f.device, f.dtype))
            self.adjustments[index] += 1
            self.adjustment_log.append((self._step, index, before, s))
            adjusted += 1
            if s >= 0:
                warnings.warn(
                    f"dynamic-inversion: layer {index} is still unstable after {steps} adjustment steps "
                    f"(abscissa {s:.3g}); increase adjust_steps or alpha",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return adjusted

    def check_stability(self) -> None:
        """Warn (one line) when a layer's inversion dynamics are unstable (``stability_every=0``)."""
        bad = [(i, s) for i, s in enumerate(self.stability()) if s is not None and s >= 0]
        if bad:
            where = ", ".join(f"layer {i} ({s:.3g})" for i, s in bad)
            warnings.warn(
                "dynamic-inversion: the inversion dynamics have an eigenvalue with real part >= 0 at "
                f"{where}; they diverge (set stability_every >= 1, increase alpha or use "
                "feedback=negative-transpose)",
                RuntimeWarning,
                stacklevel=3,
            )

    def _solve(self, index: int, delta: Tensor) -> Tensor:
        """The dynamics' fixed point ``B (W B - alpha I)^{-1} delta`` in the weights' dtype (outside
        autocast: a bfloat16 ``W B`` loses the small eigenvalues that the solve divides by)."""
        layer = self.layers[index]
        kind = delta.device.type
        with torch.autocast(kind, enabled=False) if kind in ("cpu", "cuda") else contextlib.nullcontext():
            w = layer.weight.detach() * layer.scale
            b = (self.feedback[index] * layer.scale).T
            delta = delta.to(w.dtype)
            out, inp = w.shape
            if out <= inp:
                m = w @ b - self.alpha * torch.eye(out, dtype=w.dtype, device=w.device)
                return torch.linalg.solve(m, delta.T).T @ b.T
            m = b @ w - self.alpha * torch.eye(inp, dtype=w.dtype, device=w.device)
            return torch.linalg.solve(m, b @ delta.T).T

    def invert(self, index: int, delta: Tensor, like: Tensor) -> Tensor:
        """``r_x`` after the dynamics: layer ``index``'s input change for the output change ``delta``."""
        chain, layer = self.chain, self.layers[index]
        if self.solver == "closed-form" or (self.solver == "auto" and isinstance(layer, Dense)):
            return self._solve(index, delta)
        back = chain.transpose_map(index, self.feedback[index], like)
        if isinstance(layer, Dense):
            scaled = layer.weight.detach().T * layer.scale
            forward = lambda v: v @ scaled  # noqa: E731
        else:
            forward = lambda v: chain.linear(index, v)  # noqa: E731
        r_y, r_x = torch.zeros_like(delta), torch.zeros_like(like)
        for n in range(1, self.iterations + 1):
            dy = (forward(r_x) - delta - self.alpha * r_y).mul_(self.dt)
            r_y.add_(dy)
            dx = (back(r_y) - r_x).mul_(self.dt)
            r_x.add_(dx)
            if self.tol > 0 and n % CHECK_EVERY == 0 and settled([dx, dy], [r_x, r_y], self.tol * self.dt):
                break
        self.iterations_used += n
        return r_x

    def step_stats(self) -> dict[str, float]:
        """``relax_iterations`` (the inversion steps of the last step, summed over layers) and
        ``stability_adjustments`` (the backward matrices adjusted at that step)."""
        return {
            "relax_iterations": float(self.iterations_used),
            "stability_adjustments": float(self.adjusted),
        }

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        chain, top = self.chain, len(self.layers) - 1
        self.iterations_used, self.adjusted = 0, 0
        if self.stability_every > 0 and self._step % self.stability_every == 0:
            self.adjusted = self.stabilise()
        self._step += 1
        self.steps.fill_(self._step)
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "steps" in state_dict:
            self._step = int(state_dict[prefix + "steps"])

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, iterations={self.iterations}, dt={self.dt}, alpha={self.alpha}, "
            f"tol={self.tol}, solver={self.solver}, feedback={self.feedback_kind}, "
            f"stability_every={self.stability_every}"
        )
