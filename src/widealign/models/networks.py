"""The model families of docs/method.md#models: conv net, MLP, Add-task RNN, Song et al.'s two-layer net.

Each is an ordinary ``nn.Module`` whose synaptic layers (``Dense``/``Conv2d``) are registered in
forward order, the readout last. ``seed`` makes the initialisation reproducible without touching
torch's global random state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.models.layers import BatchAxisNorm, Conv2d, Dense, Tap, _check_positive, as_list
from widealign.seeding import generator
from widealign.suggest import did_you_mean

NORMS = ("batch-axis", "batch-axis-native", "batchnorm", "none")

#: Strides of the paper's conv-net presets (docs/method.md#models); the depth is their length.
CONV_PRESETS: dict[str, list[int]] = {
    "kmnist": [1, 2, 2],
    "cifar10": [1, 1, 1, 2, 1, 2, 1],
    "imagenet": [4, 2, 1, 2, 1, 2, 1],
}


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else generator(seed, "model")


def _norm(kind: str, channels: int, eps: float) -> nn.Module:
    if kind in ("batch-axis", "batch-axis-native"):
        return BatchAxisNorm(eps, native=kind == "batch-axis-native")
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "none":
        return nn.Identity()
    raise ValueError(did_you_mean("norm", kind, NORMS))


class ConvNet(nn.Module):
    """conv -> norm, then (ReLU -> conv -> norm) repeated, then ReLU, global average pool, readout.

    Convolutions use TensorFlow SAME padding; the readout is a dense layer on the pooled channels
    (the paper's 1x1 conv scaled by 1/sqrt(C)). Taps (identities unless a rule routes them) mark
    each normalised output that goes through a ReLU into the next conv (``"preactivation"``) and
    each conv layer's full post-ReLU map, the last one before pooling (``"hidden"``).

    Args:
        in_channels: channels of the input images.
        num_outputs: size of the readout.
        widths: channels of every conv (an int for all layers, or one per layer).
        strides: one stride per conv layer; their number sets the depth.
        kernel_size: an int or one per layer (3 in the paper).
        parameterization: ``"ntk"`` (default) or ``"standard"``.
        norm: ``"batch-axis"`` (the paper's, default), ``"batch-axis-native"`` (the same map by
            torch's batch-norm kernel: faster on the CPU, not bit-identical across thread counts;
            see :class:`BatchAxisNorm`), ``"batchnorm"`` (torch's BatchNorm2d) or ``"none"``.
        eps: the normalisation's epsilon (1e-6 in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        widths: int | Sequence[int],
        strides: Sequence[int],
        kernel_size: int | Sequence[int] = 3,
        parameterization: str = "ntk",
        norm: str = "batch-axis",
        eps: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        strides = list(strides)
        if not strides:
            raise ValueError("a ConvNet needs at least one conv layer (strides is empty)")
        widths = as_list(widths, len(strides), "widths")
        kernels = as_list(kernel_size, len(strides), "kernel_size")
        _check_positive(in_channels=in_channels, num_outputs=num_outputs)
        g = _generator(seed)
        channels = [in_channels, *widths]
        self.convs = nn.ModuleList(
            Conv2d(c_in, c_out, k, s, parameterization=parameterization, generator=g)
            for c_in, c_out, k, s in zip(channels[:-1], widths, kernels, strides, strict=True)
        )
        self.norms = nn.ModuleList(_norm(norm, c, eps) for c in widths)
        self.preactivations = nn.ModuleList(Tap("preactivation") for _ in widths[1:])
        self.hidden = nn.ModuleList(Tap("hidden") for _ in widths)
        self.readout = Dense(widths[-1], num_outputs, parameterization=parameterization, generator=g)

    @classmethod
    def preset(cls, name: str, in_channels: int, num_outputs: int, width: int, **kwargs) -> ConvNet:
        """The paper's KMNIST, CIFAR-10 or ImageNet architecture at one width."""
        if name not in CONV_PRESETS:
            raise ValueError(did_you_mean("conv preset", name, CONV_PRESETS))
        return cls(in_channels, num_outputs, width, CONV_PRESETS[name], **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        z = self.norms[0](self.convs[0](x))
        for i in range(1, len(self.convs)):
            u = self.hidden[i - 1](F.relu(self.preactivations[i - 1](z)))
            z = self.norms[i](self.convs[i](u))
        u = self.hidden[-1](F.relu(z))
        return self.readout(u.mean((2, 3)))


class MLP(nn.Module):
    """Dense layers with ReLU between them: ``Dense -> ReLU -> ... -> Dense`` (flattens its input).

    Taps mark, as in :class:`ConvNet`, each pre-activation that feeds another hidden layer and each
    hidden layer's post-activation output.

    Args:
        in_features: size of the flattened input.
        num_outputs: size of the readout.
        widths: the hidden layers' widths, one entry per hidden layer.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        widths: Sequence[int],
        parameterization: str = "ntk",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        widths = list(widths)
        g = _generator(seed)
        sizes = [in_features, *widths, num_outputs]
        self.layers = nn.ModuleList(
            Dense(a, b, parameterization=parameterization, generator=g) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.preactivations = nn.ModuleList(Tap("preactivation") for _ in widths[1:])
        self.hidden = nn.ModuleList(Tap("hidden") for _ in widths)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for i, layer in enumerate(self.layers[:-1]):
            z = layer(x)
            if i < len(self.preactivations):
                z = self.preactivations[i](z)
            x = self.hidden[i](F.relu(z))
        return self.layers[-1](x)


class RNN(nn.Module):
    """The Add-task RNN of docs/method.md#models, on inputs of shape (batch, time, input_size).

    ``h_t = relu(W_ih x_t / sqrt(input_size) + W_hh h_{t-1} / sqrt(n) + b_h)`` and
    ``o_t = W_ho h_t / sqrt(n) + b_o``, with a trainable initial state ``h_0`` initialised to 0.
    The paper writes ``W_ih x_t`` with no factor; its Add task has ``input_size = 1``, where the
    two agree. The input and readout layers act on the whole sequence at once (they are the same
    at every step); the recurrent layer is called once per step. Returns (batch, time, outputs).
    A ``"hidden"`` tap marks the states of all time steps, shape (batch, time, n).
    """

    #: Calls its recurrent layer once per time step (rules such as dfa check this).
    is_recurrent = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        parameterization: str = "ntk",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        g = _generator(seed)
        self.input = Dense(input_size, hidden_size, parameterization=parameterization, generator=g)
        self.recurrent = Dense(
            hidden_size, hidden_size, bias=False, parameterization=parameterization, generator=g
        )
        self.readout = Dense(hidden_size, output_size, parameterization=parameterization, generator=g)
        self.h0 = nn.Parameter(torch.zeros(hidden_size))
        self.states = Tap("hidden")

    def forward(self, x: Tensor) -> Tensor:
        drive = self.input(x)
        h = self.h0.expand(x.shape[0], -1)
        states = []
        for t in range(x.shape[1]):
            h = F.relu(drive[:, t] + self.recurrent(h))
            states.append(h)
        return self.readout(self.states(torch.stack(states, 1)))


def is_recurrent(model: nn.Module) -> bool:
    """Whether ``model`` calls a synaptic layer once per time step (widealign's RNN)."""
    return bool(getattr(model, "is_recurrent", False))


ACTIVATIONS = {"identity": lambda z: z, "relu": F.relu, "tanh": torch.tanh}


class TwoLayer(nn.Module):
    """Song, Xu & Lafferty's network ``f(x) = (1/sqrt(p)) sum_r beta_r psi(w_r . x)``.

    ``w_r ~ N(0, I)`` with no forward factor, ``beta_r ~ N(0, 1)``, no biases; ``psi`` is
    ``identity``, ``relu`` or ``tanh``. ``hidden.weight`` holds the ``w_r`` as rows, ``readout``'s
    weight is ``beta`` (shape 1 x p).
    """

    def __init__(
        self, in_features: int, width: int, activation: str = "relu", seed: int | None = None
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        g = _generator(seed)
        self.activation = activation
        self.hidden = Dense(in_features, width, bias=False, scale=1.0, generator=g)
        self.readout = Dense(width, 1, bias=False, generator=g)

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(ACTIVATIONS[self.activation](self.hidden(x.flatten(1))))
