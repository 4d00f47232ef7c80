"""torchvision's classification models, sized for a data set and converted to synaptic layers.

:func:`torchvision_model` builds ``torchvision.models.<name>(weights=None)`` with the data set's
number of outputs, re-makes its first convolution for the data set's channels when they are not 3,
and converts it (:func:`widealign.models.convert`). Images smaller than the model's smallest
workable input (:func:`min_input_size`: 32 pixels, 64 for AlexNet, 75 for Inception v3, whose
pooling stages would otherwise shrink the maps to nothing) are first resized up to it by bilinear
interpolation, a fixed input stage with no weights: the bundled 8x8 digits reach resnet18 as
32x32 images. Initialisation is torchvision's, drawn from the run's seed without touching torch's
global random state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.models.convert import convert
from widealign.seeding import derived_seed

#: Smallest input side that survives each model's pooling; 32 for every other model.
MIN_INPUT_SIZE = {"alexnet": 64, "inception_v3": 75, "googlenet": 32}


def torchvision_names() -> list[str]:
    """The names of torchvision's image classification models (resnet18, vgg11, alexnet, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def is_torchvision_name(name: str | None) -> bool:
    """Whether ``name`` is one of torchvision's classification models."""
    return name is not None and name in torchvision_names()


def min_input_size(name: str) -> int:
    """The smallest image side :func:`torchvision_model` feeds to model ``name``."""
    return MIN_INPUT_SIZE.get(name, 32)


class ResizeInput(nn.Module):
    """Bilinear resize of images whose height or width is below ``size`` (larger ones pass as they are)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if min(h, w) >= self.size:
            return x
        factor = self.size / min(h, w)
        target = (max(self.size, round(h * factor)), max(self.size, round(w * factor)))
        return F.interpolate(x, size=target, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                return parent, name, child
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d to take the input channels")


def torchvision_model(
    name: str,
    input_shape: tuple[int, ...],
    num_outputs: int,
    parameterization: str = "standard",
    seed: int = 0,
) -> nn.Module:
    """``torchvision.models.<name>`` for images of ``input_shape`` (C, H, W), converted.

    Raises ValueError for an unknown name, non-image data, or a model with weights that
    :func:`convert` cannot convert (a vision transformer's attention, for example).
    """
    import torchvision

    if name not in torchvision_names():
        raise ValueError(f"unknown torchvision model {name!r}")
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image data (N, C, H, W), not shape {tuple(input_shape)}")
    channels, height, width = input_shape
    with torch.random.fork_rng(devices=[]):
        if seed is not None:  # None: no draws wanted (a model built on the meta device to count it)
            torch.manual_seed(derived_seed(seed, "model"))
        extra = {"aux_logits": False, "init_weights": True} if name in ("inception_v3", "googlenet") else {}
        model = torchvision.models.get_model(name, weights=None, num_classes=num_outputs, **extra)
        if channels != 3:
            parent, attr, conv = _first_conv(model)
            setattr(parent, attr, nn.Conv2d(
                channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode,
            ))  # fmt: skip
    model = convert(model, parameterization=parameterization, inplace=True)
    size = min_input_size(name)
    if min(height, width) < size:
        model = nn.Sequential(ResizeInput(size), model)
    return model
