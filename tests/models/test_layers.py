"""Synaptic layers against plain torch ops, TensorFlow SAME padding, and batch-axis normalisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from widealign.models import BatchAxisNorm, Conv2d, ConvNet, Dense, same_padding, synaptic_layers

f64 = torch.float64


def plain_dense(x, w, b):
    return F.linear(x, w) / math.sqrt(w.shape[1]) + b


def plain_conv(x, w, b, stride):
    k = w.shape[-1]
    top, bottom = same_padding(x.shape[-2], k, stride)
    left, right = same_padding(x.shape[-1], k, stride)
    return (
        F.conv2d(F.pad(x, (left, right, top, bottom)), w, None, stride) / math.sqrt(w[0].numel())
        + b[:, None, None]
    )


def test_dense_is_ntk_linear_and_its_backward_is_autograd():
    layer = Dense(5, 4).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 2, 5, dtype=f64, requires_grad=True)  # leading dims are batch dims
    y = layer(x)
    x2 = x.detach().clone().requires_grad_(True)
    w2, b2 = (t.detach().clone().requires_grad_(True) for t in (layer.weight, layer.bias))
    y2 = plain_dense(x2, w2, b2)
    torch.testing.assert_close(y, y2)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, layer.weight, layer.bias), g)
    want = torch.autograd.grad(y2, (x2, w2, b2), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("size,stride", [(6, 2), (7, 2), (6, 1), (28, 2), (9, 4)])
def test_conv_matches_tensorflow_same_conv_and_autograd(size, stride):
    layer = Conv2d(2, 3, 3, stride).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4, 2, size, size, dtype=f64, requires_grad=True)
    y = layer(x)
    assert y.shape[-1] == math.ceil(size / stride)
    x2 = x.detach().clone().requires_grad_(True)
    w2, b2 = (t.detach().clone().requires_grad_(True) for t in (layer.weight, layer.bias))
    y2 = plain_conv(x2, w2, b2, stride)
    torch.testing.assert_close(y, y2)
    g = torch.randn_like(y)
    for a, b in zip(
        torch.autograd.grad(y, (x, layer.weight, layer.bias), g), torch.autograd.grad(y2, (x2, w2, b2), g)
    ):
        torch.testing.assert_close(a, b)


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(28, 3, 2) == (0, 1)
    assert same_padding(28, 3, 1) == (1, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    layer = Conv2d(1, 1, 3, 2, bias=False).double()
    x = torch.randn(1, 1, 28, 28, dtype=f64)
    top_left = (x[0, 0, :3, :3] * layer.weight[0, 0]).sum() / 3  # no padding row/column before
    torch.testing.assert_close(layer(x)[0, 0, 0, 0], top_left)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_feedback_replaces_the_weight_in_the_input_gradient_only(kind):
    """grad_x uses B exactly as backprop would use a weight equal to B; grad_W is unchanged."""
    from widealign.models.layers import Route, routed

    layer = (Dense(5, 4) if kind == "dense" else Conv2d(2, 3, 3, 2)).double()
    feedback = torch.randn_like(layer.weight)
    x = torch.randn(3, 5, dtype=f64) if kind == "dense" else torch.randn(3, 2, 6, 6, dtype=f64)
    x.requires_grad_(True)

    class UseB(Route):
        def feedback(self, index, layer):
            return feedback

    with routed(layer, UseB()):
        y = layer(x)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, layer.weight), g)
    _, gw_bp = torch.autograd.grad(layer(x), (x, layer.weight), g)
    with torch.no_grad():
        layer.weight.copy_(feedback)
    gx_b = torch.autograd.grad(layer(x), x, g)[0]
    torch.testing.assert_close(gx, gx_b)
    torch.testing.assert_close(gw, gw_bp)


def test_ops_pass_gradcheck():
    from widealign.models.layers import _Conv2dOp, _DenseOp

    x = torch.randn(3, 4, dtype=f64, requires_grad=True)
    w = torch.randn(2, 4, dtype=f64, requires_grad=True)
    b = torch.randn(2, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _DenseOp.apply(x, w, b, w, 0.5), (x, w, b))
    xc = torch.randn(2, 2, 5, 5, dtype=f64, requires_grad=True)
    wc = torch.randn(3, 2, 3, 3, dtype=f64, requires_grad=True)
    bc = torch.randn(3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _Conv2dOp.apply(x, w, b, w, 0.3, 2), (xc, wc, bc))


def test_parameterizations_initialise_as_the_spec_says():
    ntk = Dense(400, 300)
    std = Dense(400, 300, parameterization="standard")
    assert ntk.scale == pytest.approx(1 / 20) and std.scale == 1.0
    assert ntk.weight.std().item() == pytest.approx(1.0, rel=0.02)
    assert std.weight.std().item() == pytest.approx(1 / 20, rel=0.02)
    assert torch.count_nonzero(ntk.bias) == 0
    conv = Conv2d(8, 4, 3)
    assert conv.fan_in == 72 and conv.scale == pytest.approx(1 / math.sqrt(72))


def test_batch_axis_norm_standardises_each_unit_over_the_batch_only():
    x = torch.randn(50, 3, 4, 4, dtype=f64) * 3 + torch.randn(3, 4, 4, dtype=f64)
    x[:, 0, 0, 0] = 2.0  # constant across the batch: divided by sqrt(eps), i.e. 0 here
    y = BatchAxisNorm()(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3, 4, 4, dtype=f64), atol=1e-12, rtol=0)
    var = y.var(0, unbiased=False)
    var[0, 0, 0] = 1.0
    torch.testing.assert_close(var, torch.ones(3, 4, 4, dtype=f64), atol=1e-5, rtol=0)
    assert torch.all(y[:, 0, 0, 0] == 0)
    bn = nn.BatchNorm2d(3, affine=False, eps=1e-6).double()(x)
    assert not torch.allclose(bn, y)  # torch's BatchNorm also pools over space


def test_synaptic_layers_are_listed_in_forward_order_readout_last():
    net = ConvNet(1, 10, [4, 5], strides=[1, 2])
    layers = synaptic_layers(net)
    assert [type(m).__name__ for m in layers] == ["Conv2d", "Conv2d", "Dense"]
    assert layers[-1] is net.readout
    with pytest.raises(ValueError, match="no widealign synaptic layers"):
        synaptic_layers(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: Dense(0, 3), "in_features"),
        (lambda: Conv2d(2, -1), "out_channels"),
        (lambda: Dense(2, 3, parameterization="mup"), "parameterization"),
        (lambda: ConvNet(1, 10, [4, 5], strides=[1, 2, 2]), "widths has 2 entries"),
        (lambda: ConvNet(1, 10, 4, strides=[1], norm="layer"), "unknown norm"),
        (lambda: ConvNet(1, 10, 4, strides=[]), "at least one conv layer"),
        (lambda: BatchAxisNorm(eps=0), "eps"),
    ],
)
def test_bad_layer_arguments_raise_clear_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


class _OpLog(TorchDispatchMode):
    """Records the aten ops that run inside the block (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("size,stride,padded", [(6, 1, False), (7, 2, False), (6, 2, True)])
def test_conv_pads_by_copying_only_where_same_padding_is_asymmetric(size, stride, padded):
    """Symmetric SAME padding is the convolution's own, and the backward pass hands the kernel the
    real input rather than a stride-0 stand-in it would have to copy."""
    layer = Conv2d(2, 3, 3, stride).double()
    x = torch.randn(4, 2, size, size, dtype=f64, requires_grad=True)
    g = torch.randn_like(layer(x))
    with _OpLog() as log:
        torch.autograd.grad(layer(x), (x, layer.weight), g)
    assert ("aten.constant_pad_nd" in log.ops) == padded
    assert "aten.expand" not in log.ops
    assert log.ops.count("aten.convolution_backward") == 1


def test_conv_op_with_padding_passes_gradcheck_with_either_gradient_alone():
    from widealign.models.layers import _Conv2dOp

    x = torch.randn(2, 2, 5, 5, dtype=f64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=f64, requires_grad=True)
    b = torch.randn(3, dtype=f64, requires_grad=True)
    fb = torch.randn(3, 2, 3, 3, dtype=f64)
    assert torch.autograd.gradcheck(lambda x, w, b: _Conv2dOp.apply(x, w, b, w, 0.3, 1, 1, 1, 1), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: _Conv2dOp.apply(x, w, None, w, 0.3, 2, 1, 1, (1, 2)), (x, w))
    # only the weight needs a gradient (an input layer), or only the input (B is not W)
    y = _Conv2dOp.apply(x.detach(), w, b, fb, 0.3, 1, 1, 1, 1)
    g = torch.randn_like(y)
    (gw,) = torch.autograd.grad(y, w, g)
    yp = F.conv2d(x.detach(), w, b / 0.3, 1, 1) * 0.3
    torch.testing.assert_close(gw, torch.autograd.grad(yp, w, g)[0])
    (gx,) = torch.autograd.grad(_Conv2dOp.apply(x, w.detach(), None, fb, 0.3, 1, 1, 1, 1), x, g)
    torch.testing.assert_close(gx, torch.autograd.grad(F.conv2d(x, fb, None, 1, 1) * 0.3, x, g)[0])


@pytest.mark.parametrize("shape", [(6, 3, 5, 5), (9, 4)])
def test_batch_axis_norm_op_is_the_plain_ops_and_their_gradient(shape):
    norm = BatchAxisNorm()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=f64) * 3 + 1
    x[:, 0] = 2.0  # a unit constant over the batch: grad is scaled by 1/sqrt(eps)
    xa, xb = (x.clone().requires_grad_(True) for _ in range(2))
    ya, yb = norm(xa), norm.plain(xb)
    assert torch.equal(ya, yb)
    gy = torch.randn(*shape, generator=g, dtype=f64)
    (ga,) = torch.autograd.grad(ya, xa, gy)
    (gb,) = torch.autograd.grad(yb, xb, gy)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12 * float(gb.abs().max()))
    small = torch.randn(5, 3, 2, 2, generator=g, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (small,))


def test_batch_axis_norm_refuses_a_second_derivative():
    x = torch.randn(5, 3, dtype=f64, requires_grad=True)
    (gx,) = torch.autograd.grad(BatchAxisNorm()(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="trying to differentiate twice"):
        gx.sum().backward()


@pytest.mark.parametrize("shape", [(100, 16, 14, 14), (8, 3, 5, 5), (1000, 40)])
def test_batch_axis_norm_gives_the_same_bits_with_one_thread_or_two(shape):
    g = torch.Generator().manual_seed(0)
    x, gy = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xa = x.clone().requires_grad_(True)
            y = BatchAxisNorm()(xa)
            results.append((y, *torch.autograd.grad(y, xa, gy)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_batch_axis_norm_normalises_bf16_input_in_float32():
    x = torch.randn(6, 3, 4, 4)
    y = BatchAxisNorm()(x.bfloat16())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, BatchAxisNorm().plain(x.bfloat16().float()))
    xb = x.bfloat16().requires_grad_(True)
    (gx,) = torch.autograd.grad(BatchAxisNorm()(xb).sum(), xb)
    assert gx.dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(6, 3, 5, 5), (9, 4)])
def test_native_batch_axis_norm_is_the_same_map_and_gradient(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=f64) * 3 + 1
    x[:, 0] = 2.0
    xa, xb = (x.clone().requires_grad_(True) for _ in range(2))
    ya, yb = BatchAxisNorm(native=True)(xa), BatchAxisNorm()(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    gy = torch.randn(*shape, generator=g, dtype=f64)
    (ga,) = torch.autograd.grad(ya, xa, gy)
    (gb,) = torch.autograd.grad(yb, xb, gy)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10 * float(gb.abs().max()))


def test_native_norm_is_chosen_by_name_and_gives_the_default_networks_step():
    x = torch.randn(10, 1, 8, 8, dtype=f64)
    nets = [ConvNet(1, 3, 4, [1, 2], norm=n, seed=0).double() for n in ("batch-axis", "batch-axis-native")]
    assert [net.norms[0].native for net in nets] == [False, True]
    grads = []
    for net in nets:
        net(x).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)
