"""What every learning rule shares: the contract, the rule-state helpers and the input routes.

A rule is an ``nn.Module`` bound to one model. ``rule.backward(x, y)`` runs the forward pass on a
batch, computes the rule's update and adds it to the model parameters' ``.grad``, as
``loss.backward()`` adds its gradient: a parameter whose ``.grad`` is None gets the update, one
that holds a gradient gets the sum (in place), and a parameter the rule does not train keeps what
it had. Clearing is the caller's, ``optimizer.zero_grad()`` before each step, so that two
half-batches accumulate like one batch where the rule is linear in the batch. It returns the loss
and outputs of the *current* network, so any ``torch.optim`` optimiser can then apply the update.
A rule's state (initial parameters, fixed feedback matrices) lives in its buffers; feedback that
the rule *learns* (kolen-pollack, weight-mirror, information- and symmetric-alignment) is held in
parameters of the rule, ``rule.feedback_parameters()``, which the rule's ``backward`` gives a
``.grad`` and the user's optimiser steps (:mod:`widealign.rules.learned`). ``rule.state_dict()``
saves both, ``load_state_dict`` restores them.
The model itself is not a submodule of the rule, so the rule's state dict holds only rule state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from widealign.losses import Loss, get_loss
from widealign.models.layers import Route, Synaptic, synaptic_layers
from widealign.models.networks import is_recurrent
from widealign.suggest import suggestion


class StepResult(NamedTuple):
    """The current network's loss on the batch and its outputs (both detached)."""

    loss: Tensor
    output: Tensor


#: The variant names every rule understands: ``"default"`` is the rule as ``docs/method.md#learning-rules``
#: states it (a rule with variants of its own: its first); ``"reference"`` reproduces the authors'
#: code where it differs (``docs/method.md#variants``), for the rules that offer it. A rule may
#: declare names of its own (weight-mirror: ``("akrout", "kunin")``, after the papers).
VARIANTS = ("default", "reference")

#: What a rule may read of the current forward weights outside its forward passes, from least to
#: most: nothing, their signs, their values (:func:`widealign.testing.forward_weight_reads`
#: defines a read and checks every rule's declaration; ``docs/method.md#what-each-rule-reads``).
READS = ("nothing", "weight-sign", "weight")


class Rule(nn.Module):
    """Base class: subclasses set ``name`` and implement :meth:`_backward`."""

    name: ClassVar[str]
    #: The variants this rule offers, its default first: ``"default"`` and ``"reference"`` (see
    #: :data:`VARIANTS`) or names of its own (``("akrout", "kunin")``); ``variant="default"``
    #: always selects the first.
    variants: ClassVar[tuple[str, ...]] = ("default",)
    #: Whether the rule handles models that call a synaptic layer more than once per pass.
    supports_recurrent: ClassVar[bool] = True
    #: Whether ``rule.feedback[i]`` takes the place of layer i's weight in the backward pass
    #: (fa, align-prop), so that the angle between the two is meaningful.
    feedback_replaces_weight: ClassVar[bool] = False
    #: Whether K runs of this rule can train as one batched model (:mod:`widealign.train.batched`):
    #: its state is per weight row (or drawn by :meth:`prepare`), any random numbers it draws while
    #: training come per member (``LearnedFeedback.step_draws``), and its computation is blockwise
    #: in the layers' members. Checked by a test that each member of a batched run equals its
    #: separate run.
    batchable: ClassVar[bool] = False
    #: What the rule reads of the current forward weights outside its forward passes, one of
    #: :data:`READS`, with its default options and variant on a feed-forward model; None:
    #: undeclared. A test holds every packaged rule to it with
    #: :func:`widealign.testing.forward_weight_reads`.
    reads: ClassVar[str | None] = None
    #: The settings that change :attr:`reads`, as ``(setting, reads)`` pairs: a setting is
    #: ``"name=value"`` items of the rule's options joined by ``", "`` (``variant`` and ``model``,
    #: one of mlp, conv, rnn, may be among them). docs/method.md's table lists them and the test
    #: checks each; :meth:`reads_for` must agree.
    reads_settings: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, model: nn.Module, loss: str | Loss = "mse", variant: str = "default") -> None:
        super().__init__()
        self.variant = resolve_variant(type(self), variant)
        if not self.supports_recurrent and is_recurrent(model):
            raise ValueError(f"{self.name} supports feed-forward models only, not {type(model).__name__}")
        # Stored outside nn.Module's registry so the model's tensors stay out of the rule's state.
        self.__dict__["model"] = model
        self.loss_fn = get_loss(loss)
        self.layers: list[Synaptic] = synaptic_layers(model)

    @classmethod
    def batchable_with(cls, options: dict) -> bool:
        """Whether runs of this rule with these options (:func:`~widealign.rules.rule_options`) can
        train batched; :attr:`batchable` unless a rule says otherwise."""
        return cls.batchable

    @classmethod
    def reads_for(cls, options: dict, variant: str = "default", recurrent: bool = False) -> str | None:
        """What this rule reads of the current forward weights (one of :data:`READS`) with these
        options (:func:`~widealign.rules.rule_options`) and variant, on a recurrent model or not;
        :attr:`reads` unless a rule's settings change it (:attr:`reads_settings`)."""
        return cls.reads

    def backward(self, x: Tensor, y: Tensor) -> StepResult:
        """Add this rule's update for the batch ``(x, y)`` to the model parameters' ``.grad``.

        Like ``loss.backward()``: call ``optimizer.zero_grad()`` first unless the updates of
        several batches are meant to add up. The rule's own state steps once per call, from this
        batch's update alone (a subclass's :meth:`_backward` finds ``.grad`` cleared and leaves
        this batch's update there; what was there before is added back afterwards).

        ``y`` holds targets shaped like the outputs, or integer class labels of shape ``(batch,)``
        (what torchvision data sets yield): the ``mse`` loss turns labels into the paper's targets,
        one-hot rows minus 0.1 (:func:`widealign.losses.label_targets`); ``ce`` uses them as they are.
        """
        params = list(self.model.parameters())
        held = [p.grad for p in params]
        for p in params:
            p.grad = None
        loss, output = self._backward(x, y)
        for p, g in zip(params, held):
            if g is not None:
                if p.grad is not None:
                    g.add_(p.grad)
                p.grad = g
        return StepResult(loss.detach(), output.detach())

    def feedback_parameters(self) -> Iterator[nn.Parameter]:
        """The feedback matrices this rule learns, for the user's optimiser (none by default).

        A rule that learns its feedback writes their update into their ``.grad`` in
        :meth:`backward` (adding, like the model's), and the optimiser that steps the model must
        step them too, so that its learning rate, momentum, weight decay and schedule apply::

            optimizer = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=0.05)
        """
        return iter(())

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Run the forward pass on ``(x, y)``, leave the update in ``.grad`` (which every parameter
        enters as None) and return the loss and the outputs of the network before the update."""
        raise NotImplementedError

    def step_stats(self) -> dict[str, float]:
        """Figures of the last :meth:`backward` (e.g. ``relax_iterations``, the iterations a relaxation
        ran), which the trainer averages per step into each epoch's record; none by default."""
        return {}

    def prepare(self, x: Tensor) -> None:
        """Create any state that depends on the data's shapes (dfa's matrices), from a batch like ``x``.

        The first :meth:`backward` does this by itself; a batched run calls it on each member first.
        """

    def extra_repr(self) -> str:
        variant = "" if self.variant == "default" else f", variant={self.variant}"
        return f"model={type(self.model).__name__}, synaptic_layers={len(self.layers)}{variant}"


def check_variant(rule: type[Rule], variant: str) -> None:
    """Raise a one-line ``ValueError`` unless ``rule`` offers ``variant`` (``"default"`` always)."""
    if not isinstance(variant, str):
        raise ValueError(f"a variant is a name, got {variant!r}")
    if variant != "default" and variant not in rule.variants:
        hint = suggestion(variant, rule.variants)
        if hint:
            raise ValueError(f"{rule.name} has no {variant!r} variant; {hint}")
        raise ValueError(f"{rule.name} has no {variant!r} variant (it offers {', '.join(rule.variants)})")


def resolve_variant(rule: type[Rule], variant: str) -> str:
    """``variant`` checked (:func:`check_variant`), ``"default"`` as the rule's first variant's name."""
    check_variant(rule, variant)
    return rule.variants[0] if variant == "default" else variant


class FeedbackState:
    """Mixin for rules that keep one feedback matrix per synaptic layer, as buffers ``feedback_i``."""

    layers: list[Synaptic]

    def _init_feedback(self, matrices: list[Tensor | None]) -> None:
        for i, m in enumerate(matrices):
            self.register_buffer(f"feedback_{i}", None if m is None else m.detach().clone())

    @property
    def feedback(self) -> list[Tensor | None]:
        """The feedback matrices in synaptic-layer order (None where a layer has none)."""
        return [getattr(self, f"feedback_{i}") for i in range(len(self.layers))]

    def set_feedback(self, matrices: list[Tensor | None]) -> None:
        """Load given feedback matrices (e.g. another implementation's), in synaptic-layer order."""
        if len(matrices) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} feedback matrices, got {len(matrices)}")
        for i, (old, new) in enumerate(zip(self.feedback, matrices)):
            if new is None:
                continue
            if old is not None and old.shape != new.shape:
                raise ValueError(f"feedback {i} must have shape {tuple(old.shape)}, got {tuple(new.shape)}")
            ref = self.layers[i].weight
            setattr(self, f"feedback_{i}", new.detach().to(ref.device, ref.dtype).clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        # Lazily created matrices (dfa) exist only after a first pass: allocate them to load into,
        # on the model's device and in its dtype (a checkpoint is loaded from the CPU).
        ref = self.layers[0].weight
        for name, value in self._buffers.items():
            if value is None and prefix + name in state_dict:
                shape = state_dict[prefix + name].shape
                self._buffers[name] = torch.empty(shape, device=ref.device, dtype=ref.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _escape(name: str) -> str:
    return name.replace(".", ":")


class InitialNetwork(nn.Module):
    """A frozen copy of a model's parameters and buffers, ``theta_0``, held as buffers.

    Buffer names are the model's names with ``.`` written as ``:`` (``convs:0:weight``). The copy
    is run with ``torch.func.functional_call(model, initial.tensors(), x)``, i.e. the same module
    with its own activations, derivatives and batch statistics.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.parameter_names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.buffer_names = [n for n, _ in model.named_buffers()]
        state = dict(model.named_parameters()) | dict(model.named_buffers())
        for name in self.parameter_names + self.buffer_names:
            self.register_buffer(_escape(name), state[name].detach().clone())

    def parameters_dict(self) -> dict[str, Tensor]:
        """theta_0 by the model's parameter names."""
        return {n: getattr(self, _escape(n)) for n in self.parameter_names}

    def tensors(self) -> dict[str, Tensor]:
        """theta_0 and the initial network's buffers, ready for ``functional_call``."""
        return {n: getattr(self, _escape(n)) for n in self.parameter_names + self.buffer_names}

    def set(self, tensors: dict[str, Tensor]) -> None:
        """Overwrite some of theta_0 (e.g. given initial weights), by the model's names."""
        for name, value in tensors.items():
            if name not in self.parameter_names + self.buffer_names:
                raise KeyError(f"the model has no parameter or buffer named {name!r}")
            current = getattr(self, _escape(name))
            if current.shape != value.shape:
                raise ValueError(f"{name} must have shape {tuple(current.shape)}, got {tuple(value.shape)}")
            current.copy_(value.detach())


class InitialState:
    """Mixin for rules that run the frozen initial network (align-zero, align-ada)."""

    model: nn.Module
    layers: list[Synaptic]
    initial: InitialNetwork

    def initial_parameters(self) -> dict[str, Tensor]:
        """theta_0 by the model's parameter names."""
        return self.initial.parameters_dict()

    def initial_weights(self) -> list[Tensor]:
        """The synaptic layers' initial weights W_l(0), in synaptic-layer order."""
        ids = {id(p): n for n, p in self.model.named_parameters()}
        theta0 = self.initial.parameters_dict()
        return [theta0[ids[id(layer.weight)]] for layer in self.layers]

    def set_initial_parameters(self, tensors: dict[str, Tensor]) -> None:
        """Replace (part of) theta_0, e.g. to compare with another implementation."""
        self.initial.set(tensors)


class StopGradient(Route):
    """Every synaptic layer sees ``sg(input)``: only local gradients exist."""

    def input(self, index: int, x: Tensor) -> Tensor:
        return x.detach()


class RecordInputs(Route):
    """Records every synaptic layer's input (with its graph) and hands the layer ``sg(input)``.

    ``inputs[i]`` lists layer ``i``'s inputs in call order (one per call; an RNN's recurrent layer
    is called once per time step). ``taps[kind]`` lists the values that passed the model's taps of
    that kind, in order, with their graph (they pass unchanged).
    """

    def __init__(self, num_layers: int) -> None:
        self.inputs: list[list[Tensor]] = [[] for _ in range(num_layers)]
        self.taps: dict[str, list[Tensor]] = {}

    def input(self, index: int, x: Tensor) -> Tensor:
        self.inputs[index].append(x)
        return x.detach()

    def tap(self, kind: str, index: int, x: Tensor) -> Tensor:
        self.taps.setdefault(kind, []).append(x)
        return x
