"""Both variants of the Align rules against independent float64 implementations, away from theta_0.

Each rule is written here a second time with plain torch ops (F.conv2d, F.pad, F.linear) in the
style of the authors' TensorFlow scripts (value + x - sg(x) injections, a surrogate loss), from the
description in docs/method.md, without widealign's layers, routes or rules. widealign's rule and the
plain version then train side by side with SGD for several steps on fresh batches; their updates
must agree at every step, so the comparison is made away from theta_0.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import grads, make_batch, make_model
from widealign.rules import make_rule

TOL = dict(rtol=1e-9, atol=1e-11)
STEPS = 4
LR = 0.5


def sg(t: torch.Tensor) -> torch.Tensor:
    return t.detach()


def dense(h, w, b=None):
    out = F.linear(h, w) / math.sqrt(w.shape[1])
    return out if b is None else out + b


def conv(h, w, b, stride):
    """TensorFlow SAME padding (the odd pixel after), NTK scale, bias."""
    k, size = w.shape[-1], h.shape[-1]
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    pad = (total // 2, total - total // 2)
    h = F.pad(h, (*pad, *pad))
    return F.conv2d(h, w, None, stride) / math.sqrt(w[0].numel()) + b[:, None, None]


def norm(h):
    return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-6)


STRIDES = [1, 2, 2]  # conftest's conv net


def mse(f, y):
    return ((f - y) ** 2).mean()


def seq_mse(f, y):
    return ((f - y) ** 2).mean(0).sum()


# --- the conv net -------------------------------------------------------------------------------


def conv_align_ada(p, p0, x, y, variant):
    """Surrogate loss whose gradient w.r.t. the current parameters ``p`` is align-ada's update."""
    h, h0 = x, x  # the current and the initial network's activity
    z = z0 = None
    for i, s in enumerate(STRIDES):
        w, b = p[f"convs.{i}.weight"], p[f"convs.{i}.bias"]
        w0, b0 = p0[f"convs.{i}.weight"], p0[f"convs.{i}.bias"]
        if i == 0:
            u, u0 = x, x
        else:
            u = F.relu(z)
            if variant == "reference":  # inject the current pre-activation before the ReLU
                u0 = F.relu(z0 + z - sg(z))
            else:  # inject the current synaptic input
                u0 = F.relu(z0) + u - sg(u)
        z = norm(conv(sg(u), w, b, s))
        z0 = norm(conv(u0, w0, b0, s))
    h, h0 = F.relu(z).mean((2, 3)), F.relu(z0).mean((2, 3))
    f = dense(sg(h), p["readout.weight"], p["readout.bias"])
    f0 = dense(h0 + h - sg(h), p0["readout.weight"], p0["readout.bias"])
    return mse(f + f0 - sg(f0), y)


def conv_align_prop(p, p0, x, y):
    """Feedback alignment with B = W(0), written as the authors write fa: the input gradient of
    conv(x, W) goes through conv(x, B) - sg(conv(x, B))."""
    h = x
    for i, s in enumerate(STRIDES):
        w, b, w0 = p[f"convs.{i}.weight"], p[f"convs.{i}.bias"], p0[f"convs.{i}.weight"]
        if i > 0:
            h = F.relu(h)
        through_b = conv(h, w0, torch.zeros_like(b), s)
        h = norm(conv(sg(h), w, b, s) + through_b - sg(through_b))
    h = F.relu(h).mean((2, 3))
    through_b = dense(h, p0["readout.weight"])
    f = dense(sg(h), p["readout.weight"], p["readout.bias"]) + through_b - sg(through_b)
    return mse(f, y)


def conv_bp(p, x, y):
    h = x
    for i, s in enumerate(STRIDES):
        if i > 0:
            h = F.relu(h)
        h = norm(conv(h, p[f"convs.{i}.weight"], p[f"convs.{i}.bias"], s))
    return mse(dense(F.relu(h).mean((2, 3)), p["readout.weight"], p["readout.bias"]), y)


# --- the RNN ------------------------------------------------------------------------------------


def rnn_states(p, x, h_init, inject=None):
    """States of h_t = relu(W_ih x_t + W_hh h_{t-1}/sqrt(n) + b); ``inject(t, h)`` replaces the state
    the recurrence reads at step t."""
    h, states = h_init, []
    for t in range(x.shape[1]):
        read = h if inject is None else inject(t, h)
        h = F.relu(dense(x[:, t], p["input.weight"], p["input.bias"]) + dense(read, p["recurrent.weight"]))
        states.append(h)
    return states


def rnn_readout(p, h):
    return dense(h, p["readout.weight"], p["readout.bias"])


def rnn_align_ada(p, p0, x, y, variant):
    batch = x.shape[0]
    h_cur = p["h0"].expand(batch, -1)
    cur_reads = []  # what the current recurrence reads at each step (with its graph)

    def record(t, h):
        cur_reads.append(h)
        return sg(h)

    current = rnn_states(p, x, h_cur, record)
    start0 = sg(p["h0"]).expand(batch, -1) if variant == "reference" else p0["h0"].expand(batch, -1)
    initial = rnn_states(p0, x, start0, lambda t, h0: h0 + cur_reads[t] - sg(cur_reads[t]))
    loss = 0.0
    for t, (h, h0) in enumerate(zip(current, initial)):
        f = rnn_readout(p, sg(h))
        readout_in = h0 if variant == "reference" else h0 + h - sg(h)
        f0 = rnn_readout(p0, readout_in)
        loss = loss + mse(f + f0 - sg(f0), y[:, t])
    return loss


def rnn_forward(p, x, h_init):
    return torch.stack([rnn_readout(p, h) for h in rnn_states(p, x, h_init)], 1)


def rnn_align_zero_grads(p, p0, x, y, variant) -> dict:
    """J^T e through the initial RNN (started from the current h0 in the reference variant)."""
    with torch.no_grad():
        f = rnn_forward(p, x, p["h0"].expand(x.shape[0], -1))
    q = {n: t.detach().clone().requires_grad_(True) for n, t in p0.items()}
    if variant == "reference":
        q["h0"] = p["h0"].detach().clone().requires_grad_(True)
    f0 = rnn_forward(q, x, q["h0"].expand(x.shape[0], -1))
    loss = seq_mse(f + f0 - sg(f0), y)
    return dict(zip(q, torch.autograd.grad(loss, list(q.values()))))


def rnn_readout_reference_grads(p, x, y) -> dict:
    loss = seq_mse(rnn_forward(p, x, p["h0"].expand(x.shape[0], -1)), y)
    names = ["readout.weight", "readout.bias", "h0"]
    got = dict(zip(names, torch.autograd.grad(loss, [p[n] for n in names])))
    return {n: got.get(n) for n in p}


# --- running both side by side ------------------------------------------------------------------


def plain_grads(family: str, rule: str, variant: str, p: dict, p0: dict, x, y) -> dict:
    """The plain implementation's update for the current parameters ``p`` (None: not trained)."""
    if family == "rnn" and rule == "align-zero":
        return rnn_align_zero_grads(p, p0, x, y, variant)
    if family == "rnn" and rule == "readout":
        return rnn_readout_reference_grads(p, x, y)
    if family == "conv" and rule == "align-ada":
        loss = conv_align_ada(p, p0, x, y, variant)
    elif family == "conv" and rule == "align-prop":
        loss = conv_align_prop(p, p0, x, y)
    elif family == "rnn" and rule == "align-ada":
        loss = rnn_align_ada(p, p0, x, y, variant)
    else:
        raise ValueError((family, rule))
    got = torch.autograd.grad(loss, list(p.values()), allow_unused=True)
    return dict(zip(p, got))


CASES = [
    ("conv", "align-ada", "default"),
    ("conv", "align-ada", "reference"),
    ("conv", "align-prop", "default"),
    ("rnn", "align-ada", "default"),
    ("rnn", "align-ada", "reference"),
    ("rnn", "align-zero", "reference"),
    ("rnn", "readout", "reference"),
]


@pytest.mark.parametrize(("family", "rule_name", "variant"), CASES)
def test_rule_matches_an_independent_implementation_over_sgd_steps(family, rule_name, variant):
    model = make_model(family)
    loss = "sequence-mse" if family == "rnn" else "mse"
    rule = make_rule(rule_name, model, loss, variant=variant)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    p0 = {n: t.detach().clone() for n, t in model.named_parameters()}
    p = {n: t.detach().clone().requires_grad_(True) for n, t in model.named_parameters()}
    for k in range(STEPS):
        x, y = make_batch(family, seed=30 + k)
        opt.zero_grad()
        rule.backward(x, y)
        expected = plain_grads(family, rule_name, variant, p, p0, x, y)
        got = grads(model)
        for name in got:
            assert (got[name] is None) == (expected[name] is None), (k, name)
            if got[name] is not None:
                torch.testing.assert_close(got[name], expected[name], **TOL, msg=f"step {k}: {name}")
        opt.step()
        with torch.no_grad():
            for name, g in expected.items():
                if g is not None:
                    p[name] -= LR * g
    moved = [n for n, t in model.named_parameters() if not torch.allclose(t, p0[n])]
    assert moved, "the parameters never left theta_0"


def _train(model, rule, family, steps=STEPS):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for k in range(steps):
        x, y = make_batch(family, seed=30 + k)
        opt.zero_grad()
        rule.backward(x, y)
        opt.step()


@pytest.mark.parametrize("family", ["conv", "rnn"])
def test_the_variants_differ_away_from_theta_0(family):
    """The comparisons above can tell the variants apart: after training their updates differ."""
    loss = "sequence-mse" if family == "rnn" else "mse"
    updates = {}
    for variant in ("default", "reference"):
        model = make_model(family)
        with torch.no_grad():  # a non-zero h0, so that where the initial RNN starts matters
            if family == "rnn":
                model.h0.normal_()
        rule = make_rule("align-ada", model, loss, variant=variant)
        _train(model, rule, family)
        x, y = make_batch(family, seed=99)
        rule.backward(x, y)
        updates[variant] = grads(model)
    a, b = updates["default"], updates["reference"]
    assert any(not torch.allclose(a[n], b[n]) for n in a if a[n] is not None)


def test_align_ada_differs_from_align_zero_after_steps():
    """An align-ada that returned align-zero's update would fail the conv comparisons above."""
    model = make_model("conv")
    rule = make_rule("align-ada", model)
    _train(model, rule, "conv")
    x, y = make_batch("conv", seed=99)
    rule.backward(x, y)
    ada = grads(model)
    zero = make_rule("align-zero", model)
    zero.set_initial_parameters(rule.initial_parameters())
    model.zero_grad()
    zero.backward(x, y)
    assert any(not torch.allclose(ada[n], g) for n, g in grads(model).items())


def test_reference_align_ada_is_bp_at_theta_0_on_the_conv_net():
    x, y = make_batch("conv")
    model = make_model("conv")
    make_rule("align-ada", model, variant="reference").backward(x, y)
    ref = grads(model)
    model.zero_grad()
    make_rule("bp", model).backward(x, y)
    for name, g in grads(model).items():
        torch.testing.assert_close(ref[name], g, **TOL, msg=name)


def test_reference_align_ada_is_not_bp_at_theta_0_on_the_rnn():
    """The same-step output error never reaches the hidden layer: the update differs from bp's."""
    x, y = make_batch("rnn")
    model = make_model("rnn")
    make_rule("align-ada", model, "sequence-mse", variant="reference").backward(x, y)
    ref = grads(model)
    model.zero_grad()
    make_rule("bp", model, "sequence-mse").backward(x, y)
    bp = grads(model)
    torch.testing.assert_close(ref["readout.weight"], bp["readout.weight"], **TOL)
    assert not torch.allclose(ref["input.weight"], bp["input.weight"])


@pytest.mark.parametrize("name", ["bp", "fa", "dfa", "align-prop"])
def test_rules_without_a_reference_variant_refuse_it(name):
    with pytest.raises(ValueError, match="no 'reference' variant"):
        make_rule(name, make_model("mlp"), variant="reference")


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="align-ada has no 'authors' variant"):
        make_rule("align-ada", make_model("mlp"), variant="authors")
