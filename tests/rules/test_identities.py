"""The exact identities of docs/method.md#learning-rules, for the MLP, conv net and RNN, in float64."""

from __future__ import annotations

import pytest
import torch

from conftest import grads, loss_for, make_batch, make_model, sgd_steps
from widealign.models import synaptic_layers
from widealign.rules import make_rule

TOL = dict(rtol=1e-9, atol=1e-11)


def assert_same_grads(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] is None) == (b[name] is None), name
        if a[name] is not None:
            torch.testing.assert_close(a[name], b[name], **TOL, msg=name)


def rule_grads(name: str, model, family: str, x, y, **kw) -> dict:
    make_rule(name, model, loss_for(family), **kw).backward(x, y)
    return grads(model)


@pytest.mark.parametrize("name", ["align-zero", "align-ada", "align-prop"])
def test_equals_bp_at_first_step(name, family):
    x, y = make_batch(family)
    expected = rule_grads("bp", make_model(family), family, x, y)
    assert_same_grads(rule_grads(name, make_model(family), family, x, y), expected)


@pytest.mark.parametrize("name", ["align-zero", "align-ada", "align-prop"])
def test_equals_bp_at_first_step_with_batchnorm(name):
    x, y = make_batch("conv")
    expected = rule_grads("bp", make_model("conv", norm="batchnorm"), "conv", x, y)
    assert_same_grads(rule_grads(name, make_model("conv", norm="batchnorm"), "conv", x, y), expected)


@pytest.mark.parametrize("name", ["fa", "dfa"])
def test_fa_and_dfa_differ_from_bp_at_first_step(name):
    """The identities above are not vacuous: rules with random feedback do differ."""
    x, y = make_batch("mlp")
    expected = rule_grads("bp", make_model("mlp"), "mlp", x, y)
    got = rule_grads(name, make_model("mlp"), "mlp", x, y)
    assert not torch.allclose(got["layers.0.weight"], expected["layers.0.weight"])


def test_align_rules_leave_bp_after_training(family):
    """Once theta != theta_0, align-zero and align-ada are no longer backprop."""
    for name in ("align-zero", "align-ada"):
        model = make_model(family)
        rule = make_rule(name, model, loss_for(family))
        sgd_steps(model, rule, family, steps=3)
        x, y = make_batch(family, seed=99)
        rule.backward(x, y)
        mine = grads(model)
        make_rule("bp", model, loss_for(family)).backward(x, y)
        bp = grads(model)
        assert any(not torch.allclose(mine[n], bp[n]) for n in mine if mine[n] is not None)


def test_fa_with_current_weights_is_bp(family):
    model = make_model(family)
    rule = make_rule("fa", model, loss_for(family))
    sgd_steps(model, rule, family, steps=3)
    x, y = make_batch(family, seed=99)
    rule.set_feedback([layer.weight.detach() for layer in synaptic_layers(model)])
    rule.backward(x, y)
    fa = grads(model)
    model.zero_grad()
    make_rule("bp", model, loss_for(family)).backward(x, y)
    assert_same_grads(fa, grads(model))


def test_align_prop_is_fa_with_initial_weights(family):
    prop_model, fa_model = make_model(family), make_model(family)
    prop = make_rule("align-prop", prop_model, loss_for(family))
    fa = make_rule("fa", fa_model, loss_for(family))
    fa.set_feedback([layer.weight.detach() for layer in synaptic_layers(fa_model)])
    for k in range(4):
        x, y = make_batch(family, seed=20 + k)
        prop_model.zero_grad()
        fa_model.zero_grad()
        prop.backward(x, y)
        fa.backward(x, y)
        assert_same_grads(grads(prop_model), grads(fa_model))
        for model in (prop_model, fa_model):
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.5 * p.grad


def jacobian_transpose_error(model, theta0: dict, x, e) -> dict:
    """``J_{theta_0}(x)^T e`` from the full Jacobian (torch.func.jacrev), contracted by hand."""
    names = list(theta0)

    def f(*params):
        return torch.func.functional_call(model, dict(zip(names, params)), (x,))

    jac = torch.func.jacrev(f, argnums=tuple(range(len(names))))(*theta0.values())
    return {n: torch.tensordot(e, j, dims=e.dim()) for n, j in zip(names, jac)}


def test_align_zero_after_steps_is_initial_jacobian_transpose_error(family):
    model = make_model(family)
    theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    rule = make_rule("align-zero", model, loss_for(family))
    sgd_steps(model, rule, family, steps=4)
    x, y = make_batch(family, seed=99)
    rule.backward(x, y)
    got = grads(model)
    with torch.no_grad():
        f = model(x)
    f.requires_grad_(True)
    (e,) = torch.autograd.grad(rule.loss_fn(f, y), f)
    expected = jacobian_transpose_error(model, theta0, x, e)
    assert any(not torch.allclose(theta0[n], p) for n, p in model.named_parameters())
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, **TOL, msg=name)


def test_readout_touches_only_the_readout(family):
    model = make_model(family)
    x, y = make_batch(family)
    make_rule("readout", model, loss_for(family)).backward(x, y)
    got = grads(model)
    readout = synaptic_layers(model)[-1]
    readout_ids = {id(p) for p in readout.parameters()}
    model.zero_grad()
    make_rule("bp", model, loss_for(family)).backward(x, y)
    bp = grads(model)
    for name, p in model.named_parameters():
        if id(p) in readout_ids:
            torch.testing.assert_close(got[name], bp[name], **TOL)
        else:
            assert got[name] is None, name


def test_dfa_matches_closed_form_on_mlp():
    model = make_model("mlp")
    rule = make_rule("dfa", model)
    x, y = make_batch("mlp")
    rule.backward(x, y)
    got = grads(model)
    l1, l2, l3 = synaptic_layers(model)
    _, b1, b2 = rule.feedback
    with torch.no_grad():
        a1 = x @ l1.weight.T / 5**0.5 + l1.bias
        u1 = a1.relu()
        a2 = u1 @ l2.weight.T / 7**0.5 + l2.bias
        u2 = a2.relu()
        f = u2 @ l3.weight.T / 6**0.5 + l3.bias
        e = 2 * (f - y) / f.numel()
        d1 = (e @ b1) * (a1 > 0)
        d2 = (e @ b2) * (a2 > 0)
    expected = {
        "layers.0.weight": d1.T @ x / 5**0.5,
        "layers.0.bias": d1.sum(0),
        "layers.1.weight": d2.T @ u1 / 7**0.5,
        "layers.1.bias": d2.sum(0),
        "layers.2.weight": e.T @ u2 / 6**0.5,
        "layers.2.bias": e.sum(0),
    }
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, **TOL, msg=name)
    assert b1.shape == (3, 7) and b2.shape == (3, 6)


def test_dfa_feedback_variance_is_one_over_size():
    """B_l is (outputs, C*H*W) for every conv layer, the last one's full map included."""
    model = make_model("conv")
    rule = make_rule("dfa", model)
    rule.backward(torch.rand(4, 2, 12, 12, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    assert rule.feedback[0] is None
    assert [tuple(b.shape) for b in rule.feedback[1:]] == [(3, 4 * 12 * 12), (3, 5 * 6 * 6), (3, 3 * 3 * 3)]
    for b in rule.feedback[1:3]:  # >= 500 entries each: the sample variance is within 10%
        assert abs(b.var().item() * b.shape[1] - 1) < 0.1


def test_dfa_on_the_conv_net_matches_an_independent_implementation():
    """Written as the authors' code writes dfa: out_grad = sum_l (B_l u_l - sg(B_l u_l)), u_l each
    conv layer's whole post-ReLU map flattened in NCHW order, inputs of every layer sg'd."""
    import math

    import torch.nn.functional as F

    model = make_model("conv")
    rule = make_rule("dfa", model)
    sgd_steps(model, rule, "conv", steps=2)
    x, y = make_batch("conv", seed=99)
    rule.backward(x, y)
    got = grads(model)
    p = {n: t.detach().clone().requires_grad_(True) for n, t in model.named_parameters()}
    h, out_grad = x, 0.0
    for i, (stride, b_l) in enumerate(zip([1, 2, 2], rule.feedback[1:])):
        w, b = p[f"convs.{i}.weight"], p[f"convs.{i}.bias"]
        pad = (0, 1, 0, 1) if (h.shape[-1] % 2 == 0 and stride == 2) else (1, 1, 1, 1)
        z = F.conv2d(F.pad(h.detach(), pad), w, None, stride) / math.sqrt(w[0].numel()) + b[:, None, None]
        z = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-6)
        h = F.relu(z)
        proj = h.reshape(h.shape[0], -1) @ b_l.T
        out_grad = out_grad + proj - proj.detach()
    pooled = h.mean((2, 3)).detach()
    f = F.linear(pooled, p["readout.weight"]) / math.sqrt(pooled.shape[1]) + p["readout.bias"]
    expected = torch.autograd.grad(((f + out_grad - y) ** 2).mean(), list(p.values()))
    for (name, _), g in zip(p.items(), expected):
        torch.testing.assert_close(got[name], g, **TOL, msg=name)


def test_dfa_through_time_matches_the_closed_form_on_the_rnn():
    """Each step's output error reaches h_t through one fixed B; nothing crosses the recurrence."""
    model = make_model("rnn")
    rule = make_rule("dfa", model, "sequence-mse")
    sgd_steps(model, rule, "rnn", steps=2)
    x, y = make_batch("rnn", seed=99)
    rule.backward(x, y)
    got = grads(model)
    l_in, l_rec, l_out = synaptic_layers(model)
    (b,) = [m for m in rule.feedback if m is not None]
    assert rule.feedback[:2] == [None, None] and b.shape == (1, 6)
    n = 6
    with torch.no_grad():
        h = model.h0.expand(x.shape[0], -1)
        reads, pre, states = [], [], []
        for t in range(x.shape[1]):
            reads.append(h)
            a = x[:, t] @ l_in.weight.T + l_in.bias + h @ l_rec.weight.T / n**0.5
            h = a.relu()
            pre.append(a)
            states.append(h)
        hs = torch.stack(states, 1)
        f = hs @ l_out.weight.T / n**0.5 + l_out.bias
        e = 2 * (f - y) / x.shape[0]  # d(sum over t of the batch mean)/df
        delta = torch.stack([(e[:, t] @ b) * (pre[t] > 0) for t in range(x.shape[1])], 1)
        expected = {
            "input.weight": delta.reshape(-1, n).T @ x.reshape(-1, 1),
            "input.bias": delta.sum((0, 1)),
            "recurrent.weight": sum(delta[:, t].T @ reads[t] for t in range(x.shape[1])) / n**0.5,
            "readout.weight": e.reshape(-1, 1).T @ hs.reshape(-1, n) / n**0.5,
            "readout.bias": e.sum((0, 1)),
        }
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, **TOL, msg=name)
    assert got["h0"] is None


def plain_forward(family: str, p: dict, x: torch.Tensor) -> torch.Tensor:
    """Each family written with plain torch ops (F.linear, F.conv2d, F.pad), independent of widealign."""
    import math

    import torch.nn.functional as F

    def dense(h, w, b=None):
        out = F.linear(h, w) / math.sqrt(w.shape[1])
        return out if b is None else out + b

    if family == "mlp":
        h = F.relu(dense(x, p["layers.0.weight"], p["layers.0.bias"]))
        h = F.relu(dense(h, p["layers.1.weight"], p["layers.1.bias"]))
        return dense(h, p["layers.2.weight"], p["layers.2.bias"])
    if family == "conv":
        h = x
        for i, stride in enumerate([1, 2, 2]):
            if i > 0:
                h = F.relu(h)
            w, b = p[f"convs.{i}.weight"], p[f"convs.{i}.bias"]
            pad = (0, 1, 0, 1) if (h.shape[-1] % 2 == 0 and stride == 2) else (1, 1, 1, 1)
            h = F.conv2d(F.pad(h, pad), w, None, stride) / math.sqrt(w[0].numel()) + b[:, None, None]
            h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-6)
        return dense(F.relu(h).mean((2, 3)), p["readout.weight"], p["readout.bias"])
    h = p["h0"].expand(x.shape[0], -1)
    outs = []
    for t in range(x.shape[1]):
        h = F.relu(dense(x[:, t], p["input.weight"], p["input.bias"]) + dense(h, p["recurrent.weight"]))
        outs.append(dense(h, p["readout.weight"], p["readout.bias"]))
    return torch.stack(outs, 1)


def test_bp_equals_torch_autograd_through_plain_ops(family):
    model = make_model(family)
    with torch.no_grad():  # non-zero biases and h0, so that their gradients are exercised too
        for name, p in model.named_parameters():
            if "bias" in name or name == "h0":
                p.normal_()
    x, y = make_batch(family)
    rule = make_rule("bp", model, loss_for(family))
    rule.backward(x, y)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    out = plain_forward(family, params, x)
    torch.testing.assert_close(out, model(x), **TOL)
    expected = torch.autograd.grad(rule.loss_fn(out, y), list(params.values()))
    for (name, p), g in zip(model.named_parameters(), expected):
        torch.testing.assert_close(p.grad, g, **TOL, msg=name)
