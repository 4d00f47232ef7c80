"""Networks built from synaptic layers (docs/method.md#models)."""

from widealign.models.convert import TorchConv2d, convert
from widealign.models.layers import (
    BatchAxisNorm,
    Conv2d,
    Dense,
    Route,
    Synaptic,
    Tap,
    routed,
    same_padding,
    synaptic_layers,
    taps,
)
from widealign.models.networks import CONV_PRESETS, MLP, NORMS, RNN, ConvNet, TwoLayer

__all__ = [
    "BatchAxisNorm",
    "CONV_PRESETS",
    "Conv2d",
    "ConvNet",
    "Dense",
    "MLP",
    "NORMS",
    "RNN",
    "Route",
    "Synaptic",
    "Tap",
    "TorchConv2d",
    "TwoLayer",
    "convert",
    "routed",
    "same_padding",
    "synaptic_layers",
    "taps",
]
