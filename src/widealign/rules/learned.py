"""What the rules that derive or learn their feedback share: the transport and the B step.

Every such rule is feedback alignment with a matrix ``B_l`` of the weight's shape in place of
``W_l`` in the backward pass (``grad_x = scale * B_l^T grad_y``), as fa is; the weight gradient is
the true local one. They differ in how ``B_l`` comes about:

* derived each step from the current weights (usf, frsf, brsf: :meth:`LearnedFeedback.transport`);
* learned (kolen-pollack, weight-mirror, information- and symmetric-alignment): B_l is a parameter
  of the rule, and the user's optimiser steps it. After the step's backward pass the rule adds
  B's update direction to ``B.grad`` (:meth:`LearnedFeedback.update_feedback`), as it adds the
  forward update to ``W.grad``: ``dR/dB`` for a local objective ``R`` (Kunin et al.'s primitives,
  :mod:`widealign.rules.primitives`), or Kolen-Pollack's mirrored update ``G + lambda B``.

How the B step relates to the user's optimiser: it *is* the optimiser's step. Put
``rule.feedback_parameters()`` in the optimiser next to the model's parameters::

    optimizer = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=0.05)

so that B takes the optimiser's learning rate, momentum, weight decay and schedule, as in the
papers' training (Kunin et al. train B and W with one optimiser; Akrout et al.'s Kolen-Pollack gives
both the same update). With plain SGD
at learning rate ``eta`` that is ``B <- B - eta * B.grad``. widealign's own training (``widealign
train``, sweeps, ``train_run``) does this for you.

A trip-wire catches the optimiser that leaves B out: if, between two calls of ``rule.backward``,
the forward weights were stepped but a feedback matrix whose ``.grad`` the rule had written was
not (its ``_version`` unchanged), the second call raises a one-line ``RuntimeError``. Two
``backward`` calls without a step in between (gradient accumulation) do not trip it, nor does an
optimiser whose kernels leave ``_version`` alone (torch's ``fused=True`` Adam: it then checks
nothing, W's counter does not move either). To keep B
fixed on purpose, call :meth:`StoredFeedback.freeze_feedback` (or ``requires_grad_(False)`` on
some of the matrices): the rule then writes no ``.grad`` for them and does not check them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Route, Synaptic, routed
from widealign.rules.base import FeedbackState, Rule, StepResult
from widealign.seeding import generator


class _Transport(Route):
    """Layer ``i`` sends errors back through ``matrices[i]``; its inputs are recorded (detached)."""

    def __init__(self, matrices: list[Tensor], record: bool) -> None:
        self.matrices = matrices
        self.inputs: list[list[Tensor]] | None = [[] for _ in matrices] if record else None

    def input(self, index: int, x: Tensor) -> Tensor:
        if self.inputs is not None:
            self.inputs[index].append(x.detach())
        return x

    def feedback(self, index: int, layer: Synaptic) -> Tensor:
        return self.matrices[index]


class LearnedFeedback(Rule):
    """Base class: fa's transport through :meth:`transport`, then :meth:`update_feedback`."""

    feedback_replaces_weight = True
    #: Whether :meth:`update_feedback` needs each layer's inputs of the step.
    records_inputs: ClassVar[bool] = False

    def __init__(
        self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, variant: str = "default"
    ) -> None:
        super().__init__(model, loss, variant)
        # The seed and the step counter are buffers (on the model's device, like all rule state)
        # so that a rule restored from a state_dict draws the numbers the saved one would have;
        # Python copies are what the draws read, so that no step waits on the device.
        device = self.layers[0].weight.device
        self._seed, self._steps = int(seed), 0
        #: The members' seeds when this rule trains a batched run (see :meth:`step_draws`).
        self.member_seeds: list[int] | None = None
        self.register_buffer("seed", torch.tensor(self._seed, dtype=torch.int64, device=device))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.int64, device=device))

    def transport(self) -> list[Tensor]:
        """The matrices that carry the error back through each layer in this step."""
        raise NotImplementedError

    def update_feedback(self, inputs: list[list[Tensor]] | None) -> None:
        """Learn B after the backward pass (``.grad`` holds the step's weight updates)."""

    def step_generator(self, purpose: str, seed: int | None = None) -> torch.Generator:
        """A CPU generator for this step's random draws (a function of the seed and the step;
        ``seed`` names another run's seed, a batched run's member)."""
        return generator(self._seed if seed is None else seed, f"{purpose}-{self._steps}")

    def step_draws(
        self, purpose: str, draws: Callable[[torch.Generator], list[Tensor]], axes: list[int]
    ) -> list[Tensor]:
        """This step's random tensors, ``draws(step_generator(purpose))``.

        In a batched run (:mod:`widealign.train.batched`, which sets ``member_seeds``) every member
        draws its blocks from its own stream, as its separate run would, and tensor ``i`` is the
        members' blocks concatenated along ``axes[i]``.
        """
        if self.member_seeds is None:
            return draws(self.step_generator(purpose))
        blocks = [draws(self.step_generator(purpose, seed)) for seed in self.member_seeds]
        return [torch.cat(parts, axis) for parts, axis in zip(zip(*blocks), axes, strict=True)]

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        route = _Transport([b.detach() for b in self.transport()], self.records_inputs)
        with routed(self.model, route):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        with torch.no_grad():
            self.update_feedback(route.inputs)
        self._steps += 1
        self.steps.fill_(self._steps)
        return loss, output

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "seed" in state_dict:
            self._seed = int(state_dict[prefix + "seed"])
        if prefix + "steps" in state_dict:
            self._steps = int(state_dict[prefix + "steps"])

    @property
    def feedback(self) -> list[Tensor]:
        """The matrices the next step transports through, in synaptic-layer order."""
        return self.transport()


#: The one-line answer to ``lr=`` given to a rule that learns its feedback.
LR_MOVED = (
    "{name} takes no lr: its feedback matrices are parameters that your optimiser steps; put "
    "rule.feedback_parameters() in it, e.g. torch.optim.SGD([*model.parameters(), "
    "*rule.feedback_parameters()], lr=...)"
)


def add_grad(p: Tensor, update: Tensor) -> None:
    """Add ``update`` to ``p.grad`` as autograd would (a new tensor where ``.grad`` is None)."""
    if p.grad is None:
        p.grad = update.detach().clone()
    else:
        p.grad.add_(update)


class StoredFeedback(FeedbackState, LearnedFeedback):
    """B_l kept as parameters ``feedback_i`` (:meth:`feedback_parameters`), drawn at creation like
    fa's (the forward init distribution) and stepped by the user's optimiser."""

    def __new__(cls, *args: Any, **kwargs: Any) -> StoredFeedback:  # noqa: D102
        if "lr" in kwargs:
            raise ValueError(LR_MOVED.format(name=cls.name))
        return super().__new__(cls)

    def __init__(
        self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, variant: str = "default"
    ) -> None:
        super().__init__(model, loss, seed, variant)
        g = generator(seed, "feedback")
        for i, layer in enumerate(self.layers):
            self.register_parameter(f"feedback_{i}", nn.Parameter(layer.sample_weight(g)))
        #: The versions of the forward weights and of B after the last backward (the trip-wire).
        self._versions: tuple[list[int], list[int]] | None = None

    def feedback_parameters(self) -> Iterator[nn.Parameter]:
        """B_l in synaptic-layer order: put them in the optimiser that steps the model."""
        return iter([getattr(self, f"feedback_{i}") for i in range(len(self.layers))])

    def freeze_feedback(self, frozen: bool = True) -> StoredFeedback:
        """Keep B fixed (``frozen=False`` lets it learn again): the rule writes no ``.grad`` for it
        and the trip-wire no longer asks for it in the optimiser. Returns the rule."""
        for b in self.feedback_parameters():
            b.requires_grad_(not frozen)
        return self

    def transport(self) -> list[Tensor]:
        return [getattr(self, f"feedback_{i}") for i in range(len(self.layers))]

    @property
    def feedback(self) -> list[Tensor]:
        return [b.detach() for b in self.transport()]

    def set_feedback(self, matrices: list[Tensor | None]) -> None:
        """Load given feedback matrices in place (an optimiser holding B keeps holding it)."""
        if len(matrices) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} feedback matrices, got {len(matrices)}")
        with torch.no_grad():
            for i, (old, new) in enumerate(zip(self.feedback_parameters(), matrices)):
                if new is None:
                    continue
                if old.shape != new.shape:
                    raise ValueError(
                        f"feedback {i} must have shape {tuple(old.shape)}, got {tuple(new.shape)}"
                    )
                old.copy_(new.detach())

    def _current_versions(self) -> tuple[list[int], list[int]]:
        return (
            [layer.weight._version for layer in self.layers],
            [b._version for b in self.feedback_parameters()],
        )

    def _check_feedback_stepped(self) -> None:
        """The trip-wire (module docstring): B left out of an optimiser that stepped W."""
        if self._versions is None:
            return
        weights, feedback = self._current_versions()
        old_weights, old_feedback = self._versions
        for i, b in enumerate(self.feedback_parameters()):
            if (
                b.requires_grad
                and b.grad is not None
                and weights[i] != old_weights[i]
                and feedback[i] == old_feedback[i]
            ):
                raise RuntimeError(
                    f"{self.name}: the forward weights were stepped but feedback_{i} was not; put "
                    "rule.feedback_parameters() in your optimiser (next to model.parameters()), or "
                    "call rule.freeze_feedback() to keep B fixed"
                )

    def backward(self, x: Tensor, y: Tensor) -> StepResult:
        """As :meth:`Rule.backward`, and B's update added to ``B.grad`` (see the module docstring)."""
        self._check_feedback_stepped()
        result = super().backward(x, y)
        self._versions = self._current_versions()
        return result

    def add_feedback_grad(self, index: int, update: Tensor) -> None:
        """Add ``update`` to ``B_index.grad``, unless that matrix is frozen."""
        b = getattr(self, f"feedback_{index}")
        if b.requires_grad:
            add_grad(b, update)


class ObjectiveFeedback(StoredFeedback):
    """``B.grad`` gets ``dR_l/dB_l`` of a local objective per training step (Kunin et al.)."""

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        """``R_l`` as a differentiable function of ``b`` (B_l in the weight's units)."""
        raise NotImplementedError

    def update_feedback(self, inputs: list[list[Tensor]] | None) -> None:
        for i, layer in enumerate(self.layers):
            b = getattr(self, f"feedback_{i}")
            if not b.requires_grad:
                continue
            with torch.enable_grad():
                leaf = b.detach().requires_grad_(True)
                objective = self.objective(i, layer, leaf, inputs[i] if inputs else [])
                (grad,) = torch.autograd.grad(objective, leaf)
            self.add_feedback_grad(i, grad)
