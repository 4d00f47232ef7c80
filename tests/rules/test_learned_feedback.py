"""Rules that derive or learn their feedback: the identities their updates promise.

Kolen-Pollack's B - W decays geometrically, usf's feedback is s*sign(W) at every step, the sign
rules keep W's signs, and the learned objectives turn a random B towards W on a single layer.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conftest import grads, make_batch, make_model
from widealign.models import Dense, synaptic_layers
from widealign.rules import (
    InformationAlignment,
    KolenPollack,
    SymmetricAlignment,
    WeightMirror,
    make_rule,
)

LEARNED = ["kolen-pollack", "weight-mirror", "information-alignment", "symmetric-alignment"]
SIGNS = ["usf", "frsf", "brsf"]


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    cos = (a * b).sum() / (a.norm() * b.norm())
    return math.degrees(math.acos(float(cos.clamp(-1, 1))))


@pytest.mark.parametrize("family", ["mlp", "conv"])
def test_kolen_pollack_difference_decays_by_one_minus_eta_lambda_per_step(family):
    eta, lam, steps = 0.3, 0.2, 12
    model = make_model(family)
    rule = KolenPollack(model, seed=4, weight_decay=lam)
    opt = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=eta)
    layers = synaptic_layers(model)
    start = [float((b - layer.weight.detach()).norm()) for b, layer in zip(rule.feedback, layers)]
    for t in range(1, steps + 1):
        opt.zero_grad()
        rule.backward(*make_batch(family, seed=20 + t))
        opt.step()
        for b, layer, d0 in zip(rule.feedback, layers, start):
            assert float((b - layer.weight.detach()).norm()) == pytest.approx(
                (1 - eta * lam) ** t * d0, rel=1e-12
            )


def test_kolen_pollack_weight_update_is_the_local_gradient_plus_decay():
    model = make_model("mlp")
    kp = KolenPollack(model, seed=1, weight_decay=0.1)
    fa = make_rule("fa", copy.deepcopy(model))
    fa.set_feedback(kp.feedback)
    x, y = make_batch("mlp")
    fa.backward(x, y)
    expected = grads(fa.model)
    kp.backward(x, y)
    for name, p in model.named_parameters():
        decay = 0.1 * p.detach() if name.endswith("weight") else 0.0
        torch.testing.assert_close(p.grad, expected[name] + decay, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("family", ["mlp", "conv", "rnn"])
@pytest.mark.parametrize("magnitude", ["unit", "init-std"])
def test_usf_feedback_is_the_sign_of_w_at_every_step(family, magnitude):
    """Liao et al.'s unit sign by default; ``magnitude="init-std"`` scales it by the init std (the
    standard parameterisation, where that std is 1/sqrt(fan_in), tells the two apart)."""
    model = make_model(family, parameterization="standard")
    loss = "sequence-mse" if family == "rnn" else "mse"
    rule = make_rule("usf", model, loss, magnitude=magnitude)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for t in range(4):
        opt.zero_grad()
        x, y = make_batch(family, seed=30 + t)
        layers = synaptic_layers(model)
        s = [1.0 if magnitude == "unit" else layer.init_std for layer in layers]
        assert magnitude == "unit" or any(v != 1.0 for v in s)
        expected = [v * torch.sign(layer.weight.detach()) for v, layer in zip(s, layers)]
        assert all(torch.equal(b, e) for b, e in zip(rule.feedback, expected))
        fa = make_rule("fa", copy.deepcopy(model), loss)  # fa through s*sign(W): the same step
        fa.set_feedback(expected)
        fa.backward(x, y)
        rule.backward(x, y)
        for name, g in grads(fa.model).items():
            assert torch.equal(dict(model.named_parameters())[name].grad, g), name
        opt.step()


@pytest.mark.parametrize("name", SIGNS)
def test_sign_rules_keep_the_weights_signs(name):
    model = make_model("conv")
    rule = make_rule(name, model, seed=2)
    first = [b.clone() for b in rule.feedback]
    for b, layer in zip(first, synaptic_layers(model)):
        assert torch.equal(torch.sign(b), torch.sign(layer.weight))
    rule.backward(*make_batch("conv"))
    changed = any(not torch.equal(a, b) for a, b in zip(first, rule.feedback))
    assert changed == (name == "brsf")  # only brsf redraws its magnitudes every batch


#: Steps within which B must be within 20 degrees of W, and the B learning rate used.
ANGLE_STEPS, ANGLE_LR = 300, 20.0


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (WeightMirror, {}),
        (WeightMirror, {"variant": "kunin"}),
        (InformationAlignment, {}),
        (SymmetricAlignment, {}),
    ],
)
def test_learned_feedback_turns_towards_w_on_a_single_dense_layer(cls, options):
    torch.manual_seed(0)
    model = nn.Sequential(Dense(40, 6, parameterization="standard")).double()
    rule = cls(model, seed=3, **options)
    opt = torch.optim.SGD(rule.feedback_parameters(), lr=ANGLE_LR)  # W stays where it is
    w = model[0].weight
    assert angle(rule.feedback[0], w) > 70  # independent random start
    g = torch.Generator().manual_seed(5)
    for _ in range(ANGLE_STEPS):
        x = torch.randn(50, 40, generator=g, dtype=torch.float64)
        opt.zero_grad()
        rule.backward(x, torch.randn(50, 6, generator=g, dtype=torch.float64))
        opt.step()
        if angle(rule.feedback[0], w) < 20:
            break
    assert angle(rule.feedback[0], w) < 20, f"{cls.name}: {angle(rule.feedback[0], w):.1f} degrees"


@pytest.mark.parametrize("name", SIGNS)
def test_the_sign_rules_have_no_parameters(name):
    rule = make_rule(name, make_model("mlp"), seed=1)
    assert list(rule.parameters()) == [] and list(rule.feedback_parameters()) == []
    assert {"seed", "steps"} <= set(rule.state_dict())


@pytest.mark.parametrize("name", LEARNED)
def test_learned_feedback_is_the_rules_parameters_and_in_its_state(name):
    rule = make_rule(name, make_model("mlp"), seed=1)
    params = list(rule.feedback_parameters())
    assert len(params) == len(rule.layers) and list(rule.parameters()) == params
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    assert {"seed", "steps", "feedback_0", "feedback_1", "feedback_2"} <= set(rule.state_dict())


def test_symmetric_alignment_closed_form_gradient_is_the_objectives():
    model = make_model("conv")
    rule = SymmetricAlignment(model, seed=2)
    before = [b.clone() for b in rule.feedback]
    expected = []
    for i, (layer, b) in enumerate(zip(synaptic_layers(model), before)):
        leaf = b.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(rule.objective(i, layer, leaf, []), leaf)
        expected.append(grad)
    rule.backward(*make_batch("conv"))
    for b, e in zip(rule.feedback_parameters(), expected):
        torch.testing.assert_close(b.grad, e, rtol=1e-13, atol=1e-15)
