"""K models of one architecture as one model: the members of a batched run.

A *stacked* model computes K independent networks in one pass. Every synaptic layer becomes K
blocks (``members = K``: a grouped convolution, or K dense products in one ``einsum``), and every
parameter and buffer of the stacked model is its members' tensors concatenated along the first
axis, the output-unit axis of a weight, bias, initial state or normalisation statistic:

    W = [W^(1); ...; W^(K)],    b = [b^(1); ...; b^(K)],    h0 = [h0^(1); ...; h0^(K)].

The neuron-local stages between synaptic layers (ReLU, the batch-axis normalisation, pooling over
positions) act on every unit separately, so they need no change. Member k reads the k-th block of
the input's feature axis (:func:`member_axis`: the channels of an image, the last axis of a
sequence) and writes the k-th block of the output's last axis. Nothing couples the members, so
each one's outputs and gradients are those of its own model, up to floating-point rounding in the
grouped kernels.

Only the model families whose every part is blockwise are accepted (:data:`STACKABLE`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from widealign.models.layers import BatchAxisNorm, Synaptic, Tap
from widealign.models.networks import MLP, RNN, ConvNet, is_recurrent

#: The model families that can be stacked.
STACKABLE: tuple[type[nn.Module], ...] = (ConvNet, MLP, RNN)
#: The parts those families are built from that act on every unit (or block) separately.
_BLOCKWISE: tuple[type[nn.Module], ...] = (
    *STACKABLE, Synaptic, BatchAxisNorm, Tap, nn.BatchNorm2d, nn.Identity, nn.ModuleList,
)  # fmt: skip


def check_stackable(model: nn.Module) -> None:
    """Raise a one-line ``ValueError`` unless ``model`` is a family :func:`stack_models` accepts."""
    if not isinstance(model, STACKABLE):
        names = ", ".join(cls.__name__ for cls in STACKABLE)
        raise ValueError(f"batched runs support widealign's {names}, not {type(model).__name__}")
    for part in model.modules():
        if not isinstance(part, _BLOCKWISE):
            raise ValueError(
                f"batched runs cannot stack a {type(part).__name__} inside {type(model).__name__}"
            )


def member_axis(model: nn.Module) -> int:
    """The input axis whose blocks go to the members: the last for sequences (the RNN), else 1
    (an image's channels, or a flat input's features)."""
    return -1 if is_recurrent(model) else 1


class StackedState:
    """Stacks K members' state dicts into one and splits a stacked one back.

    Tensors are concatenated along their first axis. Scalars (0-dim tensors such as a step count)
    are shared: they must agree across the members, except those listed in ``own`` (constants
    such as a member's seed), which every member keeps as it was.
    """

    def __init__(self, states: Sequence[dict[str, Tensor]], own: Sequence[str] = ()) -> None:
        if not states:
            raise ValueError("nothing to stack: no members")
        keys = list(states[0])
        for state in states[1:]:
            if list(state) != keys:
                raise ValueError(
                    "the members' states differ in their entries; they must share one architecture"
                )
        self.size, self.keys, self.own = len(states), keys, set(own)
        self.members = [dict(state) for state in states]

    def stacked(self) -> dict[str, Tensor]:
        """The members' states as one."""
        out: dict[str, Tensor] = {}
        for key in self.keys:
            values = [state[key] for state in self.members]
            if values[0] is None or not isinstance(values[0], Tensor):
                out[key] = values[0]
            elif values[0].dim() == 0:
                if key not in self.own and any(not torch.equal(v, values[0]) for v in values[1:]):
                    raise ValueError(f"the members' {key} differ; a batched run needs them equal")
                out[key] = values[0].clone()
            else:
                shapes = {tuple(v.shape) for v in values}
                if len(shapes) != 1:
                    raise ValueError(f"the members' {key} have different shapes {sorted(shapes)}")
                out[key] = torch.cat(values, 0)
        return out

    def split(self, state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """A stacked state as the K members' states (copies, each contiguous); the ``own`` scalars
        are each member's as they were when stacked."""
        members = split_state({key: state[key] for key in self.keys}, self.size)
        for key in self.own & set(self.keys):
            for k, member in enumerate(members):
                member[key] = self.members[k][key].clone()
        return members


def split_state(state: dict[str, Tensor], size: int) -> list[dict[str, Tensor]]:
    """A stacked state as ``size`` members' states: tensors in equal blocks of their first axis
    (copies, each contiguous), scalars and other values shared (scalars copied)."""
    members: list[dict[str, Tensor]] = [{} for _ in range(size)]
    for key, value in state.items():
        for k, member in enumerate(members):
            if not isinstance(value, Tensor):
                member[key] = value
            elif value.dim() == 0:
                member[key] = value.clone()
            else:
                member[key] = value.chunk(size, 0)[k].clone()
    return members


def set_tensor(model: nn.Module, name: str, value: Tensor) -> None:
    """Replace the parameter or buffer ``name`` of ``model`` by ``value``, whatever its shape."""
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    if attr in module._parameters:
        old = module._parameters[attr]
        module._parameters[attr] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[attr] = value


def stack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One model that computes all of ``models`` (same family and sizes) at once.

    The stacked model is a copy of the first member with ``members = K`` in every synaptic layer and
    the members' parameters and buffers concatenated; ``model.members`` is K. Its parameters are
    new tensors: training it does not change the members (:func:`split_into` writes it back).
    """
    for model in models:
        check_stackable(model)
    if len({type(m) for m in models}) != 1:
        raise ValueError("the members of a batched run must be one model family")
    state = StackedState([m.state_dict(keep_vars=False) for m in models]).stacked()
    stacked = copy.deepcopy(models[0])
    size = len(models)
    for module in stacked.modules():
        if isinstance(module, Synaptic):
            module.members = size
        elif isinstance(module, nn.BatchNorm2d):
            module.num_features *= size
    for name, value in state.items():
        if isinstance(value, Tensor):
            set_tensor(stacked, name, value)
    stacked.members = size
    return stacked


def split_into(stacked: nn.Module, models: Sequence[nn.Module]) -> None:
    """Copy a stacked model's parameters and buffers back into its members (in place)."""
    for model, state in zip(models, split_state(stacked.state_dict(), len(models)), strict=True):
        model.load_state_dict(state)


def stack_inputs(xs: Sequence[Tensor], axis: int) -> Tensor:
    """The members' input batches as the stacked model's input (blocks along ``axis``)."""
    return torch.cat(list(xs), axis)


def member_outputs(output: Tensor, size: int) -> tuple[Tensor, ...]:
    """A stacked model's output as its ``size`` members' outputs (blocks of the last axis)."""
    return output.unflatten(-1, (size, -1)).unbind(-2)
