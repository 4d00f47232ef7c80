"""Turn an existing model (torchvision's resnet18, vgg11, ...) into one every rule can train.

:func:`convert` replaces each ``nn.Linear`` by a :class:`~widealign.models.Dense` and each
``nn.Conv2d`` by a :class:`TorchConv2d` carrying the same weights, so the converted model computes
what the original computes (up to float rounding) while its backward pass goes through the
feedback-aware ops. Everything else (BatchNorm, ReLU, pooling, residual additions) stays as it is:
those are neuron-local stages and backpropagate through autograd as usual.

A module that holds weights of its own and is neither of the two (attention, LSTM, a transposed
convolution, an embedding) cannot be converted; ``strict=True`` refuses the model and names it,
``strict=False`` leaves it and warns, by name, that it still backpropagates through its true weights.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.models.layers import Dense, Synaptic, _Conv2dOp

#: Modules with parameters whose backward pass is neuron-local (normalisation, PReLU): kept as they are.
NEURON_LOCAL = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.PReLU,
)


class TorchConv2d(Synaptic):
    """A synaptic convolution with ``nn.Conv2d``'s semantics: any padding (ints, ``"same"``,
    ``"valid"``, zeros/reflect/replicate/circular), stride, dilation, groups and bias.

    ``fan_in = (C_in / groups) * kH * kW``. Padding is applied with ``F.pad`` before the op, exactly
    as ``nn.Conv2d`` pads (``"same"`` puts the odd pixel after), so the weight gradient and the
    feedback path see the padded input.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int] = (1, 1),
        padding: tuple[int, int, int, int] = (0, 0, 0, 0),
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        parameterization: str = "standard",
        generator: torch.Generator | None = None,
    ) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups {groups}")
        fan_in = in_channels // groups * kernel_size[0] * kernel_size[1]
        super().__init__(fan_in, parameterization, None)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = tuple(kernel_size), tuple(stride), tuple(dilation)
        self.padding, self.groups, self.padding_mode = tuple(padding), groups, padding_mode
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters(generator)

    def _pad(self, x: Tensor) -> Tensor:
        if not any(self.padding):
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, self.padding, mode=mode)

    def forward(self, x: Tensor) -> Tensor:
        x, feedback = self._routed(x)
        return _Conv2dOp.apply(
            self._pad(x),
            self.weight,
            self.bias,
            feedback,
            self.scale,
            self.stride,
            self.dilation,
            self.groups,
        )

    def apply_matrix(self, x: Tensor, matrix: Tensor) -> Tensor:
        """``scale * conv(pad(x), matrix)`` with this layer's stride, dilation and groups, no bias."""
        y = F.conv2d(self._pad(x), matrix, None, self.stride, 0, self.dilation, self.groups)
        return y * self.scale

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, {self.parameterization}"
        )


def _unconstructed(cls: type[Synaptic], *args: object, **kwargs: object) -> Synaptic:
    """A layer built on the meta device (no random draw, no memory): its tensors are set next."""
    with torch.device("meta"):
        return cls(*args, **kwargs)


def _set_weights(layer: Synaptic, weight: Tensor, bias: Tensor | None) -> Synaptic:
    """Give ``layer`` the original weight expressed in its parameterisation (same function)."""
    with torch.no_grad():
        w = weight.detach().clone() / layer.scale if layer.scale != 1.0 else weight.detach().clone()
    layer.weight = nn.Parameter(w, requires_grad=weight.requires_grad)
    layer.bias = (
        None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
    )
    return layer


def convert_linear(module: nn.Linear, parameterization: str = "standard") -> Dense:
    """A :class:`Dense` computing what ``module`` computes."""
    layer = _unconstructed(
        Dense, module.in_features, module.out_features, module.bias is not None, parameterization
    )
    return _set_weights(layer, module.weight, module.bias)


def convert_conv2d(module: nn.Conv2d, parameterization: str = "standard") -> TorchConv2d:
    """A :class:`TorchConv2d` computing what ``module`` computes (its padding included)."""
    # nn.Conv2d keeps its padding as F.pad's (left, right, top, bottom), "same" resolved.
    padding = tuple(module._reversed_padding_repeated_twice)
    layer = _unconstructed(
        TorchConv2d, module.in_channels, module.out_channels, module.kernel_size, module.stride, padding,
        module.dilation, module.groups, module.bias is not None, module.padding_mode, parameterization,
    )  # fmt: skip
    return _set_weights(layer, module.weight, module.bias)


def _has_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _convert_children(module: nn.Module, prefix: str, parameterization: str, leftover: list[str]) -> None:
    """Replace convertible children in place; record (and do not enter) modules with other weights."""
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, Synaptic):
            continue
        if isinstance(child, nn.Linear):
            setattr(module, name, convert_linear(child, parameterization))
        elif isinstance(child, nn.Conv2d):
            setattr(module, name, convert_conv2d(child, parameterization))
        elif _has_own_parameters(child) and not isinstance(child, NEURON_LOCAL):
            leftover.append(f"{full} ({type(child).__name__})")
        else:
            _convert_children(child, f"{full}.", parameterization, leftover)


def convert(
    model: nn.Module, parameterization: str = "standard", strict: bool = True, inplace: bool = False
) -> nn.Module:
    """``model`` with its ``nn.Linear``/``nn.Conv2d`` replaced by synaptic layers of the same weights.

    Args:
        model: any ``nn.Module``; its layers must be registered in forward order (as torchvision's
            are) because the last synaptic layer is taken as the readout and dfa feeds layers in
            registration order.
        parameterization: ``"standard"`` keeps the weights as they are; ``"ntk"`` stores
            ``W * sqrt(fan_in)`` and multiplies by ``1/sqrt(fan_in)`` in the forward pass, the
            same function under the paper's parameterisation (gradient steps then differ).
        strict: refuse (ValueError naming the module) any other module that holds weights, unless
            it is a neuron-local one (:data:`NEURON_LOCAL`: BatchNorm, LayerNorm, GroupNorm, PReLU);
            with ``strict=False`` such modules are left and a warning names them.
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        the converted model (a copy unless ``inplace``), in the original's dtype and device.
    """
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, nn.Linear):
        return convert_linear(model, parameterization)
    if isinstance(model, nn.Conv2d):
        return convert_conv2d(model, parameterization)
    leftover: list[str] = []
    _convert_children(model, "", parameterization, leftover)
    if _has_own_parameters(model) and not isinstance(model, (Synaptic, *NEURON_LOCAL)):
        leftover.insert(0, f"(the model itself) ({type(model).__name__})")
    if leftover and strict:
        raise ValueError(
            f"cannot convert {', '.join(leftover)}: it holds weights that are not nn.Linear or nn.Conv2d "
            "(pass strict=False to leave it, backpropagating through its true weights)"
        )
    for what in leftover:
        warnings.warn(
            f"convert left {what} as it is: it still backpropagates through its true weights",
            stacklevel=2,
        )
    if not any(isinstance(m, Synaptic) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d to convert")
    return model


__all__ = ["NEURON_LOCAL", "TorchConv2d", "convert", "convert_conv2d", "convert_linear"]
