"""widealign.convert: converted torchvision models compute what the originals compute, bp through
them is torch.autograd on the originals, and weights it cannot convert are refused by name."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from widealign import convert
from widealign.models import Dense, TorchConv2d, synaptic_layers
from widealign.rules import make_rule


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=7).double()


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("vgg11", 32), ("alexnet", 64)])
def test_converted_torchvision_models_compute_what_the_originals_compute(name, size):
    model = torchvision_model(name).eval()
    converted = convert(model)
    kinds = {type(m) for m in converted.modules()}
    assert nn.Conv2d not in kinds and nn.Linear not in kinds and {Dense, TorchConv2d} <= kinds
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-12, atol=1e-14)


def test_the_original_is_left_untouched_unless_inplace():
    model = torchvision_model("resnet18")
    convert(model)
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.fc, nn.Linear)
    assert convert(model, inplace=True) is model and isinstance(model.fc, Dense)


def test_bp_on_the_converted_resnet18_is_autograd_on_the_original():
    model = torchvision_model("resnet18")
    converted = convert(model)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randn(3, 7, generator=g, dtype=torch.float64)
    torch.nn.functional.mse_loss(model(x), y).backward()
    make_rule("bp", converted).backward(x, y)
    reference = dict(model.named_parameters())
    for name, p in converted.named_parameters():  # same names: modules are replaced where they were
        torch.testing.assert_close(p.grad, reference[name].grad, rtol=1e-10, atol=1e-13, msg=name)
    assert len(synaptic_layers(converted)) == 21 and synaptic_layers(converted)[-1] is converted.fc


class Odd(nn.Module):
    """Every nn.Conv2d option torchvision does not exercise, and a Linear on a 3-d input."""

    def __init__(self) -> None:
        super().__init__()
        self.same = nn.Conv2d(4, 6, (3, 2), padding="same", dilation=(2, 1), bias=False)
        self.grouped = nn.Conv2d(6, 6, 3, stride=(2, 1), padding=(1, 2), groups=3, padding_mode="reflect")
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6, padding_mode="circular")
        self.valid = nn.Conv2d(6, 5, 2, padding="valid", padding_mode="replicate", dilation=2)
        self.norm = nn.GroupNorm(1, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.grouped(torch.tanh(self.same(x))))
        x = self.norm(self.valid(torch.tanh(self.depthwise(x))))
        return self.head(x.flatten(2).transpose(1, 2)).mean(1)


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_any_padding_stride_dilation_groups_and_bias_forward_and_backward(parameterization):
    torch.manual_seed(3)
    model = Odd().double()
    converted = convert(model, parameterization=parameterization)
    assert all(isinstance(m, TorchConv2d) for m in (converted.same, converted.grouped, converted.valid))
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out, out2 = model(x), converted(x2)
    torch.testing.assert_close(out2, out, rtol=1e-12, atol=1e-13)
    out.square().sum().backward()
    out2.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-10, atol=1e-12)
    reference = dict(model.named_parameters())
    for name, p in converted.named_parameters():
        scale = getattr(converted.get_submodule(name.rsplit(".", 1)[0]), "scale", 1.0)
        expected = reference[name].grad * (scale if name.endswith("weight") else 1.0)
        torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-12, msg=name)


class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.lstm = nn.LSTM(4, 4, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(x))[0])


def test_weights_it_cannot_convert_are_refused_by_name():
    with pytest.raises(ValueError, match=r"cannot convert lstm \(LSTM\).*strict=False") as err:
        convert(WithLSTM())
    assert "\n" not in str(err.value)
    attention = nn.Sequential(nn.Linear(4, 4), nn.TransformerEncoderLayer(4, 2, 8, batch_first=True))
    with pytest.raises(ValueError, match=r"1.self_attn \(MultiheadAttention\)"):
        convert(attention)


def test_strict_false_leaves_them_and_warns_by_name():
    model = WithLSTM()
    with pytest.warns(UserWarning, match=r"lstm \(LSTM\).*still backpropagates through its true weights"):
        converted = convert(model, strict=False)
    assert isinstance(converted.lstm, nn.LSTM) and isinstance(converted.embed, Dense)
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(converted(x), model(x))


def test_a_model_with_nothing_to_convert_is_an_error():
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        convert(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


def test_converting_twice_changes_nothing():
    model = convert(torchvision_model("resnet18"))
    again = convert(model)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert copy.deepcopy(again).fc.weight.shape == (7, 512)
