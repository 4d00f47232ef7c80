"""Update alignment while training: cosine to bp, feedback angle, distance from initialisation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from conftest import grads, loss_for, make_batch, make_model, sgd_steps
from widealign.data import load_digits
from widealign.diagnostics import (
    distances_from_init,
    feedback_angles,
    update_alignment,
    update_alignment_metric,
    update_cosines,
    weight_snapshot,
)
from widealign.models import MLP, ConvNet, synaptic_layers
from widealign.rules import make_rule
from widealign.train import Trainer


@pytest.mark.parametrize("name", ["align-zero", "align-ada", "align-prop"])
def test_cosine_to_bp_is_one_at_first_step(name, family):
    model = make_model(family)
    cosines = update_cosines(make_rule(name, model, loss_for(family)), *make_batch(family))
    assert len(cosines) == len(synaptic_layers(model))
    for c in cosines:
        assert c == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("name", ["fa", "dfa"])
@pytest.mark.parametrize("family", ["mlp", "conv"])
def test_cosine_to_bp_is_below_one_for_random_feedback(name, family):
    """Hidden layers get a different update; the readout learns with its true gradient (cos 1)."""
    model = make_model(family)
    *hidden, readout = update_cosines(make_rule(name, model, loss_for(family)), *make_batch(family))
    assert all(c < 1 - 1e-6 for c in hidden), hidden
    assert readout == pytest.approx(1, abs=1e-12)


def test_cosines_leave_learned_feedback_and_its_grad_as_they_were():
    model = make_model("mlp")
    rule = make_rule("kolen-pollack", model)
    held = [torch.full_like(b, 0.5) for b in rule.feedback_parameters()]
    for b, g in zip(rule.feedback_parameters(), held):
        b.grad = g
    before = [b.detach().clone() for b in rule.feedback_parameters()]
    update_cosines(rule, *make_batch("mlp"))
    assert all(b.grad is g and bool((g == 0.5).all()) for b, g in zip(rule.feedback_parameters(), held))
    assert all(torch.equal(b, b0) for b, b0 in zip(rule.feedback_parameters(), before))


def test_readout_rule_frozen_layers_score_zero():
    model = make_model("mlp")
    assert update_cosines(make_rule("readout", model), *make_batch("mlp"))[:-1] == [0.0, 0.0]


def test_measuring_leaves_the_model_untouched():
    """Gradients, parameters and batch-norm running statistics are exactly as before."""
    model = make_model("conv", norm="batchnorm")
    rule = make_rule("align-ada", model)
    sgd_steps(model, rule, "conv", steps=2)
    rule.backward(*make_batch("conv", seed=50))
    before_grads = grads(model)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    update_cosines(rule, *make_batch("conv"))
    after_grads = grads(model)
    for name, g in before_grads.items():
        assert torch.equal(after_grads[name], g), name
    for name, v in model.state_dict().items():
        assert torch.equal(v, before_state[name]), name
    assert any("running_mean" in name for name in before_state)  # the check covers buffers


def test_feedback_angles(family):
    model = make_model(family)
    prop = make_rule("align-prop", model, loss_for(family))
    assert feedback_angles(prop) == pytest.approx([0.0] * len(prop.layers), abs=1e-5)
    sgd_steps(model, prop, family, steps=3)
    assert all(a > 1e-3 for a in feedback_angles(prop))  # W moved away from B = W(0)
    fa = make_rule("fa", model, loss_for(family))
    fa.set_feedback([2.0 * layer.weight.detach() for layer in fa.layers])
    assert feedback_angles(fa) == pytest.approx([0.0] * len(fa.layers), abs=1e-5)
    fa.set_feedback([-layer.weight.detach() for layer in fa.layers])
    assert feedback_angles(fa) == pytest.approx([180.0] * len(fa.layers), abs=1e-5)
    assert feedback_angles(make_rule("bp", model, loss_for(family))) == [None] * len(fa.layers)


def test_dfa_feedback_has_no_angle():
    model = make_model("mlp")
    rule = make_rule("dfa", model)
    rule.backward(*make_batch("mlp"))
    assert feedback_angles(rule) == [None, None, None]
    assert not any(
        key.startswith("angle_fb")
        for key in update_alignment(rule, *make_batch("mlp"), weight_snapshot(model))
    )


def test_distances_from_init(family):
    model = make_model(family)
    w0 = weight_snapshot(model)
    assert distances_from_init(model, w0) == [0.0] * len(w0)
    factors = [0.5 + 0.25 * i for i in range(len(w0))]
    with torch.no_grad():
        for layer, c in zip(synaptic_layers(model), factors):
            layer.weight.mul_(1 + c)
    assert distances_from_init(model, w0) == pytest.approx(factors, rel=1e-12)
    with pytest.raises(ValueError):
        distances_from_init(model, w0[:-1])


def digits_trainer(x: torch.Tensor, y: torch.Tensor, measure: bool) -> Trainer:
    """fa on an MLP and 300 digits; ``measure`` adds the update-alignment epoch metric."""
    data = load_digits()
    data = replace(data.subset(300), x_test=data.x_test[:100], y_test=data.y_test[:100])
    model = MLP(64, 10, [32, 16], seed=0)
    metrics = [update_alignment_metric(model, x, y)] if measure else []
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return Trainer(
        model, make_rule("fa", model), opt, data, batch_size=100, epoch_metrics=metrics, progress=False
    )


def test_epoch_metric_records_flat_floats_and_does_not_change_training():
    data = load_digits()
    x, y = data.x_train[-100:], data.y_train[-100:]
    plain, measured = digits_trainer(x, y, measure=False), digits_trainer(x, y, measure=True)
    w0 = weight_snapshot(measured.model)
    plain.fit(2)
    history = measured.fit(2)
    for p, q in zip(plain.model.parameters(), measured.model.parameters()):
        assert torch.equal(p, q)
    keys = [f"{kind}/{i}" for kind in ("cos_bp", "angle_fb", "dist_init") for i in range(3)]
    for record in history:
        assert sorted(record.extra) == sorted(keys)
        assert all(type(v) is float for v in record.extra.values())
        json.dumps(record.as_dict(), allow_nan=False)
    assert all(history[0].extra[f"dist_init/{i}"] > 0 for i in range(3))
    assert history[-1].extra == update_alignment(measured.rule, x, y, w0)
    with pytest.raises(ValueError, match="different model"):
        update_alignment_metric(plain.model, x, y)(measured)


@pytest.fixture(scope="module")
def align_ada_cosines():
    """Mean layerwise align-ada-vs-bp cosine on a probe batch after 5 steps (lr 2) on digits."""
    data = load_digits()
    x, y = data.x_test[:100], data.y_test[:100]
    data = replace(data.subset(500), x_test=x, y_test=y)
    means = {}
    for width in (8, 256):
        model = ConvNet.preset("kmnist", 1, 10, width, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=2.0)
        metric = update_alignment_metric(model, x, y)
        trainer = Trainer(
            model, make_rule("align-ada", model), opt, data, 100, epoch_metrics=[metric], progress=False
        )
        extra = trainer.fit(1)[0].extra
        cosines = [v for k, v in extra.items() if k.startswith("cos_bp/")]
        means[width] = sum(cosines) / len(cosines)
    return means


def test_align_ada_cosine_rises_with_width(align_ada_cosines):
    assert align_ada_cosines[256] > align_ada_cosines[8], align_ada_cosines
