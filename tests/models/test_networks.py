"""Model families against their formulas in docs/method.md#models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from widealign.models import CONV_PRESETS, MLP, RNN, ConvNet, TwoLayer, synaptic_layers

f64 = torch.float64


@pytest.mark.parametrize("name,size", [("kmnist", 28), ("cifar10", 32), ("imagenet", 64)])
def test_presets_have_the_papers_depth_strides_and_width(name, size):
    net = ConvNet.preset(name, 3, 10, 8)
    assert [c.stride for c in net.convs] == CONV_PRESETS[name]
    assert all(c.out_channels == 8 for c in net.convs)
    assert net(torch.rand(2, 3, size, size)).shape == (2, 10)


def test_convnet_forward_is_conv_norm_relu_pool_readout():
    net = ConvNet(1, 3, [2, 2], strides=[1, 2], seed=0).double()
    x = torch.rand(5, 1, 6, 6, dtype=f64)

    def norm(h):
        return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-6)

    c1, c2 = net.convs
    h = norm(c1(x))
    h = norm(c2(F.relu(h)))
    pooled = F.relu(h).mean((2, 3))
    expected = pooled @ net.readout.weight.T / math.sqrt(2) + net.readout.bias
    torch.testing.assert_close(net(x), expected)


def test_mlp_is_ntk_dense_relu_layers():
    net = MLP(4, 2, [3], seed=0).double()
    x = torch.randn(6, 4, dtype=f64)
    l1, l2 = synaptic_layers(net)
    h = F.relu(x @ l1.weight.T / 2 + l1.bias)
    torch.testing.assert_close(net(x), h @ l2.weight.T / math.sqrt(3) + l2.bias)


def test_rnn_follows_the_add_task_recurrence():
    net = RNN(1, 5, 1, seed=0).double()
    with torch.no_grad():
        net.h0.normal_()
        net.input.bias.normal_()
    x = torch.bernoulli(torch.full((3, 6, 1), 0.5, dtype=f64))
    n = 5
    h = net.h0.expand(3, -1)
    outs = []
    for t in range(6):
        h = F.relu(x[:, t] @ net.input.weight.T + h @ net.recurrent.weight.T / math.sqrt(n) + net.input.bias)
        outs.append(h @ net.readout.weight.T / math.sqrt(n) + net.readout.bias)
    torch.testing.assert_close(net(x), torch.stack(outs, 1))
    assert [m for m in synaptic_layers(net)] == [net.input, net.recurrent, net.readout]


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_two_layer_is_song_et_al_network(activation):
    net = TwoLayer(4, 7, activation, seed=0).double()
    x = torch.randn(3, 4, dtype=f64)
    psi = {"identity": lambda z: z, "relu": torch.relu, "tanh": torch.tanh}[activation]
    beta, w = net.readout.weight[0], net.hidden.weight
    expected = (psi(x @ w.T) * beta).sum(1, keepdim=True) / math.sqrt(7)
    torch.testing.assert_close(net(x), expected)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (ConvNet.preset("kmnist", 1, 10, 4, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.convs[0].weight, c.convs[0].weight)
