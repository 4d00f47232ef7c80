"""torchvision models by name, sized for a data set: channels, outputs, small inputs, the seed."""

from __future__ import annotations

import pytest
import torch

from widealign.models import TorchConv2d, synaptic_layers
from widealign.models.vision import ResizeInput, min_input_size, torchvision_model
from widealign.runs.config import RunConfig


def test_resnet18_for_8x8_grey_digits_resizes_and_takes_one_channel():
    model = torchvision_model("resnet18", (1, 8, 8), 10, seed=3)
    assert isinstance(model[0], ResizeInput) and model[0].size == min_input_size("resnet18") == 32
    first = synaptic_layers(model)[0]
    assert isinstance(first, TorchConv2d) and first.weight.shape[1] == 1
    out = model(torch.rand(4, 1, 8, 8))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    again = torchvision_model("resnet18", (1, 8, 8), 10, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    other = torchvision_model("resnet18", (1, 8, 8), 10, seed=4)
    assert not torch.equal(synaptic_layers(other)[0].weight, first.weight)


def test_global_random_state_is_untouched():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    torchvision_model("resnet18", (3, 32, 32), 5)
    assert torch.equal(torch.rand(3), expected)


def test_large_inputs_are_not_resized():
    model = torchvision_model("resnet18", (3, 32, 32), 5)
    assert not isinstance(model, torch.nn.Sequential)


def test_resize_keeps_the_aspect_ratio_and_reaches_the_minimum():
    assert ResizeInput(32)(torch.rand(2, 1, 8, 16)).shape == (2, 1, 32, 64)


def test_run_config_accepts_torchvision_names_and_rejects_others():
    assert RunConfig(model="resnet18").resolved().model == "resnet18"
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*torchvision"):
        RunConfig(model="resnet19").resolved()
    with pytest.raises(ValueError, match="needs image data"):
        torchvision_model("resnet18", (7, 2), 1)
