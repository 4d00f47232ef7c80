"""What the rules that derive or learn their feedback share: the transport and the B step.

Every such rule is feedback alignment with a matrix ``B_l`` of the weight's shape in place of
``W_l`` in the backward pass (``grad_x = scale * B_l^T grad_y``), as fa is; the weight gradient is
the true local one. They differ in how ``B_l`` comes about:

* derived each step from the current weights (usf, frsf, brsf: :meth:`LearnedFeedback.transport`);
* learned, after the step's backward pass, by one plain-SGD step of its own
  (:meth:`LearnedFeedback.update_feedback`): ``B <- B - lr * dR/dB`` for a local objective ``R``
  (Kunin et al.'s primitives, :mod:`widealign.rules.primitives`), or Kolen-Pollack's mirrored update.

How the B step relates to the user's optimiser: it does not go through it. B lives in the rule's
buffers and takes its step inside ``rule.backward`` with the rule's own ``lr`` (by default the
run's learning rate, which ``make_rule(..., lr=...)`` passes), so ``state_dict`` holds everything
and any optimiser can drive the forward weights. With plain SGD at that learning rate this is
what Kunin et al. do (B and W through the same gradient-descent optimiser); with momentum or
Adam the forward weights get those, B stays on plain SGD.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import Route, Synaptic, routed
from widealign.rules.base import FeedbackState, Rule
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

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0) -> None:
        super().__init__(model, loss)
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
        route = _Transport(self.transport(), self.records_inputs)
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


class StoredFeedback(FeedbackState, LearnedFeedback):
    """B_l kept as buffers ``feedback_i``, drawn at creation like fa's (the forward init distribution)."""

    def __init__(
        self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, lr: float | None = None
    ) -> None:
        super().__init__(model, loss, seed)
        self.lr = 1.0 if lr is None else float(lr)
        if not self.lr > 0:
            raise ValueError(f"{self.name}: the feedback learning rate must be positive, got {lr}")
        g = generator(seed, "feedback")
        self._init_feedback([layer.sample_weight(g) for layer in self.layers])

    def transport(self) -> list[Tensor]:
        return [getattr(self, f"feedback_{i}") for i in range(len(self.layers))]

    @property
    def feedback(self) -> list[Tensor]:
        return self.transport()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lr={self.lr}"


class ObjectiveFeedback(StoredFeedback):
    """B takes one SGD step on a local objective ``R_l(B_l)`` per training step (Kunin et al.)."""

    def objective(self, index: int, layer: Synaptic, b: Tensor, inputs: list[Tensor]) -> Tensor:
        """``R_l`` as a differentiable function of ``b`` (B_l in the weight's units)."""
        raise NotImplementedError

    def update_feedback(self, inputs: list[list[Tensor]] | None) -> None:
        for i, layer in enumerate(self.layers):
            b = getattr(self, f"feedback_{i}")
            with torch.enable_grad():
                leaf = b.detach().requires_grad_(True)
                objective = self.objective(i, layer, leaf, inputs[i] if inputs else [])
                (grad,) = torch.autograd.grad(objective, leaf)
            b.sub_(self.lr * grad)
