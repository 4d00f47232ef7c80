"""Han et al.'s dfa options (module-wise, hybrid, sparse, grouped) against exact equivalents:
one module is bp, one module per layer is plain dfa, an all-bp hybrid is bp, a two-module split is
the surrogate written out with autograd, sparse feedback through a dilated convolution (or a sparse
matrix product) is the dense product with the explicit sparse matrix, grouped propagation is fa
with the block-diagonal part of W and equals a group convolution of the blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import grads, loss_for, make_batch, make_model, sgd_steps
from widealign import convert
from widealign.models import ConvNet, synaptic_layers
from widealign.rules import make_rule
from widealign.rules.dfa import DirectFeedbackAlignment
from widealign.rules.dfa_modules import block_mask, dilated_kernel, project, sparse_mask
from widealign.runs.config import RunConfig
from widealign.runs.run import batch_key

TOL = dict(rtol=1e-10, atol=1e-12)


def converted_model() -> nn.Module:
    """A small converted torchvision-style model (convs, a residual add, pooling, a linear readout)."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.c3 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.c1(x).relu()
            h = self.c2(h).relu() + h
            return self.fc(self.c3(h).relu().mean((2, 3)))

    return convert(Net()).double()


def setup(family: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], str]:
    if family == "converted":
        model = converted_model()
        g = torch.Generator().manual_seed(1)
        x = torch.rand(5, 2, 6, 6, generator=g, dtype=torch.float64)
        return model, (x, torch.randn(5, 3, generator=g, dtype=torch.float64)), "mse"
    return make_model(family, seed), make_batch(family), loss_for(family)


def rule_grads(family: str, name: str, **options) -> dict:
    model, (x, y), loss = setup(family)
    make_rule(name, model, loss, seed=3, **options).backward(x, y)
    return grads(model)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for n in a:
        if a[n] is None or b[n] is None:
            assert a[n] is None and b[n] is None, n
        else:
            torch.testing.assert_close(a[n], b[n], **TOL, msg=n)


FAMILIES = ("mlp", "conv", "rnn", "converted")


@pytest.mark.parametrize("family", FAMILIES)
def test_one_module_is_bp(family):
    assert_same(rule_grads(family, "dfa", modules=1), rule_grads(family, "bp"))


@pytest.mark.parametrize("family", FAMILIES)
def test_one_module_per_layer_is_plain_dfa(family):
    model, _, _ = setup(family)
    layers = len(synaptic_layers(model))
    assert_same(rule_grads(family, "dfa", modules=layers), rule_grads(family, "dfa"))


@pytest.mark.parametrize("family", FAMILIES)
def test_an_all_bp_hybrid_is_bp(family):
    bp = rule_grads(family, "bp")
    assert_same(rule_grads(family, "dfa", modules=2, bp_modules=2), bp)
    assert_same(rule_grads(family, "dfa", bp_modules=10), bp)
    assert_same(rule_grads(family, "dfa", bp_modules=1), rule_grads(family, "dfa"))
    hybrid = rule_grads(family, "dfa", bp_modules=2)
    assert any(not torch.equal(v, bp[n]) for n, v in hybrid.items() if v is not None)


def test_two_modules_on_the_mlp_backpropagate_b_transpose_e_inside_the_first():
    """Layers (0, 1) | (2): u_2 receives B_2^T e, which backpropagates through layer 1 to layer 0."""
    model = make_model("mlp")
    rule = make_rule("dfa", model, seed=3, modules=2)
    sgd_steps(model, rule, "mlp", steps=2)
    x, y = make_batch("mlp", seed=99)
    rule.backward(x, y)
    got = grads(model)
    params = dict(model.named_parameters())
    l0, l1, l2 = synaptic_layers(model)
    a0 = F.linear(x, l0.weight) / 5**0.5 + l0.bias
    u2 = (F.linear(a0.relu(), l1.weight) / 7**0.5 + l1.bias).relu()
    f = F.linear(u2.detach(), l2.weight) / 6**0.5 + l2.bias
    e = 2 * (f - y).detach() / f.numel()
    hidden = torch.autograd.grad(
        u2, [params[f"layers.{i}.{k}"] for i in (0, 1) for k in ("weight", "bias")], e @ rule.feedback[2]
    )
    readout = torch.autograd.grad(f, [l2.weight, l2.bias], e)
    names = [f"layers.{i}.{k}" for i in (0, 1, 2) for k in ("weight", "bias")]
    for name, g in zip(names, [*hidden, *readout]):
        torch.testing.assert_close(got[name], g, **TOL, msg=name)


def test_two_modules_on_the_rnn_backpropagate_through_time_inside_the_recurrent_module():
    """input, recurrent | readout: every state h_t receives B^T e_t, which then travels back
    through the recurrence (and into h_0); plain dfa (three modules) cuts the recurrence."""
    model = make_model("rnn")
    rule = make_rule("dfa", model, "sequence-mse", seed=3, modules=2)
    x, y = make_batch("rnn", seed=99)
    rule.backward(x, y)
    got = grads(model)
    (b,) = [m for m in rule.feedback if m is not None]
    states = []
    h = model.h0.expand(x.shape[0], -1)
    for t in range(x.shape[1]):
        h = (model.input(x[:, t]) + model.recurrent(h)).relu()
        states.append(h)
    hs = torch.stack(states, 1)
    f = model.readout(hs.detach())
    e = 2 * (f - y).detach() / x.shape[0]
    names = ["input.weight", "input.bias", "recurrent.weight", "h0"]
    params = dict(model.named_parameters())
    expected = torch.autograd.grad(hs, [params[n] for n in names], e @ b)
    for name, g in zip(names, expected):
        torch.testing.assert_close(got[name], g, **TOL, msg=name)
    assert got["h0"].abs().sum() > 0


def test_sparse_feedback_as_a_dilated_convolution_is_the_dense_sparse_product():
    g = torch.Generator().manual_seed(0)
    shape, rate = (3, 7, 6), 3
    u = torch.randn(4, *shape, generator=g, dtype=torch.float64, requires_grad=True)
    mask = sparse_mask(5, shape, rate)
    b = torch.randn(5, 3 * 7 * 6, generator=g, dtype=torch.float64) * mask
    assert mask.sum() == 5 * 3 * 3 * 2  # rows 0, 3, 6 and columns 0, 3 of every channel
    assert dilated_kernel(b, shape, rate).shape == (5, 3, 3, 2)
    e = torch.randn(4, 5, generator=g, dtype=torch.float64)
    conv = project(u, b, rate, 1)
    (grad_conv,) = torch.autograd.grad(conv, u, e)
    dense = u.flatten(1) @ b.T
    (grad_dense,) = torch.autograd.grad(dense, u, e)
    torch.testing.assert_close(conv, dense, **TOL)
    torch.testing.assert_close(grad_conv, grad_dense, **TOL)
    torch.testing.assert_close(grad_conv.flatten(1), e @ b, **TOL)


def test_sparse_feedback_as_a_sparse_matrix_product_is_the_dense_product():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(4, 6, 10, generator=g, dtype=torch.float64, requires_grad=True)  # (batch, time, n)
    b = torch.randn(3, 10, generator=g, dtype=torch.float64) * sparse_mask(3, (10,), 4)
    assert (b != 0).sum() == 3 + 3 + 2  # entries j with (j - o) % 4 == 0
    e = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)
    sparse = project(u, b, 4, 2)
    (grad_sparse,) = torch.autograd.grad(sparse, u, e)
    torch.testing.assert_close(sparse, u @ b.T, **TOL)
    torch.testing.assert_close(grad_sparse, e @ b, **TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_sparse_dfa_is_dfa_with_the_masked_matrices(family):
    model, (x, y), loss = setup(family)
    sparse = make_rule("dfa", model, loss, seed=3, sparse=2)
    sparse.backward(x, y)
    got = grads(model)
    plain = make_rule("dfa", model, loss, seed=3)
    plain.prepare(x)
    for dense, masked in zip(plain.feedback, sparse.feedback):
        if dense is not None:
            kept = masked != 0
            assert 0 < kept.sum() < kept.numel()
            torch.testing.assert_close(masked[kept], dense[kept], rtol=0, atol=0)
    plain.set_feedback(sparse.feedback)
    model.zero_grad(set_to_none=True)  # backward adds to .grad
    plain.backward(x, y)
    assert_same(got, grads(model))


def grouped_convnet() -> ConvNet:
    return ConvNet(2, 3, [4, 4, 4], strides=[1, 2, 2], seed=0).double()


def test_grouped_propagation_is_fa_with_the_block_diagonal_weights():
    x, y = make_batch("conv")
    model = grouped_convnet()
    make_rule("dfa", model, modules=1, groups=2).backward(x, y)
    got = grads(model)
    fa = make_rule("fa", model)
    blocks = [
        w * block_mask(w, 2) if w.dim() == 4 else w
        for w in (m.weight.detach() for m in synaptic_layers(model))
    ]
    fa.set_feedback(blocks)  # the convolutions' diagonal blocks; the dense readout whole
    model.zero_grad(set_to_none=True)  # backward adds to .grad
    fa.backward(x, y)
    assert_same(got, grads(model))
    model.zero_grad(set_to_none=True)
    make_rule("bp", model).backward(x, y)
    assert not torch.allclose(got["convs.0.weight"], model.convs[0].weight.grad)


def test_the_block_diagonal_backward_is_a_group_convolution():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    grad_y = torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64)
    dense = torch.nn.grad.conv2d_input((2, 4, 5, 5), w * block_mask(w, 2), grad_y, padding=1)
    blocks = torch.cat([w[:3, :2], w[3:, 2:]])  # (6, 2, 3, 3): the two diagonal blocks
    grouped = torch.nn.grad.conv2d_input((2, 4, 5, 5), blocks, grad_y, padding=1, groups=2)
    torch.testing.assert_close(dense, grouped, **TOL)


def test_bad_options_are_refused_in_one_line():
    model = make_model("mlp")
    with pytest.raises(ValueError, match="modules=4 exceeds"):
        make_rule("dfa", model, modules=4)
    with pytest.raises(ValueError, match="groups=2 acts on errors passing inside a module"):
        make_rule("dfa", model, groups=2)
    with pytest.raises(ValueError, match="sparse must be an integer >= 1"):
        make_rule("dfa", model, sparse=0)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        make_rule("dfa", make_model("conv"), modules=1, groups=2).backward(*make_batch("conv"))


def test_only_plain_dfa_trains_batched():
    assert DirectFeedbackAlignment.batchable_with({})
    assert not DirectFeedbackAlignment.batchable_with({"modules": 2})
    cfg = RunConfig(dataset="digits", model="mlp", rule="dfa", width=8, epochs=1)
    assert batch_key(cfg) is not None
    assert (
        batch_key(
            RunConfig(
                dataset="digits", model="mlp", rule="dfa", width=8, epochs=1, rule_options={"sparse": 2}
            )
        )
        is None
    )
