"""dfa: direct feedback alignment (Nokland 2016; through time, Han et al.).

Each hidden layer's post-activation output ``u_l`` receives the output error directly through a
fixed random matrix,

    dL/du_l = B_l^T e,     B_l in R^{outputs x d_l},  entries N(0, 1/d_l),

which then passes the layer's own neuron-local derivative into its weights; inputs of synaptic
layers are ``sg``'d, so nothing else travels backwards, and the readout learns with its true local
gradient. Built as the authors' code does: ``out_grad = sum_l (B_l u_l - sg(B_l u_l))`` is added to
the outputs inside the loss.

Which activity is ``u_l`` (``docs/method.md#dfa``):

* models that mark their hidden outputs with ``"hidden"`` taps (:class:`~widealign.models.ConvNet`,
  :class:`~widealign.models.MLP`, :class:`~widealign.models.RNN`): the tapped activity. For a conv
  layer that is its whole post-ReLU map, flattened in NCHW order (``d_l = C*H*W``), the last conv
  layer's included (before pooling). For the RNN it is the state ``h_t`` of every step, and the
  output error at step ``t`` reaches ``h_t`` through one ``B`` (shape outputs x n); nothing travels
  back through the recurrence.
* any other feed-forward model: the input of every synaptic layer after the first.

The matrices are kept in synaptic-layer order: ``feedback[i]`` is the one for the hidden output
that feeds synaptic layer ``i`` (the last tapped output belongs to the readout's index; entries
without a matrix are None). ``B_l`` needs the sizes ``d_l``, so the matrices are drawn at the first
pass (or loaded by ``load_state_dict``/``set_feedback`` before it).

Han et al.'s extensions (module-wise DFA, hybrid DFA, sparse backward weights, error propagation
through group convolution) are the options ``modules``, ``bp_modules``, ``sparse`` and ``groups``,
described in :mod:`widealign.rules.dfa_modules`; their defaults give plain dfa.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from widealign.losses import Loss
from widealign.models.layers import grouped_linear, routed, taps
from widealign.rules.base import FeedbackState, RecordInputs, Rule, is_recurrent
from widealign.rules.dfa_modules import ModuleOptions, ModuleRoute, project, sparse_mask
from widealign.rules.registry import register_rule
from widealign.seeding import generator


@register_rule
class DirectFeedbackAlignment(FeedbackState, Rule):
    """dL/du_l = B_l^T e: the output error sent straight to every hidden layer's output."""

    name = "dfa"
    reads = "nothing"
    reads_settings = (("modules=2", "weight"), ("bp_modules=2", "weight"))
    batchable = True

    def __init__(
        self,
        model: nn.Module,
        loss: str | Loss = "mse",
        seed: int = 0,
        modules: int = 0,
        bp_modules: int = 0,
        sparse: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(model, loss)
        self.seed = seed
        self.options = ModuleOptions(modules, bp_modules, sparse, groups)
        self.boundaries = self.options.boundaries(len(self.layers))
        if not self.options.plain:
            self.batchable = False
        self.tapped = bool(taps(model, "hidden"))
        if is_recurrent(model) and not self.tapped:
            raise ValueError(
                f"dfa on a recurrent model needs its states marked with a Tap('hidden'); "
                f"{type(model).__name__} has none"
            )
        self._init_feedback([None] * len(self.layers))

    @classmethod
    def batchable_with(cls, options: dict) -> bool:
        """Plain dfa trains batched; Han et al.'s options train one run at a time."""
        return ModuleOptions(**options).plain

    @classmethod
    def reads_for(cls, options: dict, variant: str = "default", recurrent: bool = False) -> str:
        """Backprop inside a module reads its weights: ``modules`` or ``bp_modules`` > 1 (declared
        so whatever the depth, though ``modules`` equal to the number of synaptic layers is plain
        dfa on a feed-forward model); ``sparse`` and ``groups`` alone read nothing."""
        o = ModuleOptions(**options)
        return "weight" if o.modules > 0 or o.bp_modules > 1 else "nothing"

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.options.plain:
            return self._modular_backward(x, y)
        output, hidden, slots = self._pass(x)
        groups = self.layers[-1].members
        projection = sum(grouped_linear(u, self.feedback[i], groups) for u, i in zip(hidden, slots))
        loss = self.loss_fn(output + (projection - projection.detach()), y)
        loss.backward()
        return loss, output

    def prepare(self, x: Tensor) -> None:
        """Draw the matrices B_l for inputs like ``x`` (one pass without gradients) if not yet drawn."""
        if all(b is None for b in self.feedback):
            with torch.no_grad():
                self._pass(x) if self.options.plain else self._modular_pass(x)

    def _pass(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[int]]:
        """The current network's output, the hidden outputs u_l and their matrices' slots (drawing
        the matrices at the first pass)."""
        record = RecordInputs(len(self.layers))
        with routed(self.model, record):
            output = self.model(x)
        if self.tapped:
            hidden = record.taps.get("hidden", [])
            slots = list(range(len(self.layers) - len(hidden), len(self.layers)))
        else:
            if any(len(calls) != 1 for calls in record.inputs):
                raise ValueError("dfa needs Tap('hidden') marks on a model that calls a synaptic layer twice")
            hidden = [calls[0] for calls in record.inputs[1:]]
            slots = list(range(1, len(self.layers)))
        # Feed-forward outputs are (batch, outputs): u is flattened to (batch, d). The RNN's are
        # (batch, time, outputs): u stays (batch, time, n), and B acts at every step.
        hidden = [u.flatten(output.dim() - 1) for u in hidden]
        if self.feedback[slots[0]] is None:
            if self.layers[-1].members > 1:
                raise RuntimeError("a batched dfa takes its matrices from its members (prepare them first)")
            self._draw(output.shape[-1], dict(zip(slots, (u.shape[-1] for u in hidden))), output)
        return output, hidden, slots

    def _draw(self, outputs: int, sizes: dict[int, int], like: Tensor) -> None:
        g = generator(self.seed, "feedback")
        matrices: list[Tensor | None] = [None] * len(self.layers)
        for i, d in sizes.items():
            matrices[i] = torch.randn(outputs, d, generator=g, dtype=like.dtype) / d**0.5
        self.set_feedback(matrices)

    def _modular_backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Han et al.'s variants (:mod:`~widealign.rules.dfa_modules`): ``B_s^T e`` at the module
        boundaries, backprop inside the modules."""
        output, hidden, slots, batch_dims = self._modular_pass(x)
        rate = self.options.sparse
        projection = sum(
            (
                project(u, self.feedback[s], rate, batch_dims)
                for u, s in zip(hidden, slots)
                if s in self.boundaries
            ),
            torch.zeros_like(output),
        )
        loss = self.loss_fn(output + (projection - projection.detach()), y)
        loss.backward()
        return loss, output

    def _modular_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor], list[int], int]:
        """The output, every hidden output u_s with its slot s, and the number of batch axes."""
        if self.layers[-1].members > 1:
            raise ValueError("dfa with modules, bp_modules, sparse or groups cannot train in a batched run")
        route = ModuleRoute(len(self.layers), self.boundaries, self.tapped, self.options.groups)
        with routed(self.model, route):
            output = self.model(x)
        if self.tapped:
            hidden = route.hidden
            slots = list(range(len(self.layers) - len(hidden), len(self.layers)))
        else:
            if any(len(calls) != 1 for calls in route.inputs[1:]):
                raise ValueError("dfa needs Tap('hidden') marks on a model that calls a synaptic layer twice")
            hidden = [calls[0] for calls in route.inputs[1:]]
            slots = list(range(1, len(self.layers)))
        batch_dims = output.dim() - 1
        if self.feedback[slots[0]] is None:
            shapes = {s: tuple(u.shape[batch_dims:]) for s, u in zip(slots, hidden)}
            self._draw(output.shape[-1], {s: math.prod(shape) for s, shape in shapes.items()}, output)
            if self.options.sparse > 1:
                rate = self.options.sparse
                self.set_feedback(
                    [
                        b if b is None else b * sparse_mask(b.shape[0], shapes[i], rate).to(b)
                        for i, b in enumerate(self.feedback)
                    ]
                )
        return output, hidden, slots, batch_dims
