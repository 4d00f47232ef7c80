"""Rule state: state_dict round trips, setting feedback and theta_0 from outside."""

from __future__ import annotations

import pytest
import torch

from conftest import fast, grads, loss_for, make_batch, make_model, sgd_steps
from widealign.models import synaptic_layers
from widealign.rules import RULES, make_rule

ALL = sorted(RULES)


def train(model, rule, opt, family, steps, start):
    for k in range(start, start + steps):
        x, y = make_batch(family, seed=100 + k)
        opt.zero_grad()
        rule.backward(x, y)
        opt.step()


@pytest.mark.parametrize("name", ALL)
def test_save_restore_continue_equals_straight_training(name, family, tmp_path):
    if family == "rnn" and not RULES[name].supports_recurrent:
        pytest.skip(f"{name} is feed-forward only")
    k = 3
    model = make_model(family)
    rule = make_rule(name, model, loss_for(family), seed=5, **fast(name))
    opt = torch.optim.Adam([*model.parameters(), *rule.feedback_parameters()], lr=1e-2)
    train(model, rule, opt, family, k, 0)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "rule": rule.state_dict(), "opt": opt.state_dict()}, path)
    train(model, rule, opt, family, k, k)

    state = torch.load(path, weights_only=True)  # rule and Adam states are tensors and plain values
    fresh = make_model(family, seed=123)  # different weights: everything must come from the file
    fresh_rule = make_rule(name, fresh, loss_for(family), seed=99, **fast(name))
    fresh_opt = torch.optim.Adam([*fresh.parameters(), *fresh_rule.feedback_parameters()], lr=1e-2)
    fresh.load_state_dict(state["model"])
    fresh_rule.load_state_dict(state["rule"])
    fresh_opt.load_state_dict(state["opt"])
    train(fresh, fresh_rule, fresh_opt, family, k, k)
    for (n, p), q in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(p, q), n


def test_rule_state_holds_only_rule_tensors():
    model = make_model("conv")
    assert make_rule("bp", model).state_dict() == {}
    fa_keys = set(make_rule("fa", model).state_dict())
    assert fa_keys == {f"feedback_{i}" for i in range(4)}
    zero_keys = set(make_rule("align-zero", model).state_dict())
    assert {k.replace(":", ".").removeprefix("initial.") for k in zero_keys} == {
        n for n, _ in model.named_parameters()
    }


def test_feedback_is_listed_in_synaptic_layer_order_and_settable():
    model = make_model("mlp")
    rule = make_rule("fa", model)
    layers = synaptic_layers(model)
    assert [b.shape for b in rule.feedback] == [layer.weight.shape for layer in layers]
    given = [torch.full_like(layer.weight, 0.5) for layer in layers]
    rule.set_feedback(given)
    assert all(torch.equal(b, g) for b, g in zip(rule.feedback, given))
    with pytest.raises(ValueError, match="shape"):
        rule.set_feedback([torch.zeros(2, 2)] * 3)
    with pytest.raises(ValueError, match="expected 3"):
        rule.set_feedback(given[:2])


def test_align_prop_feedback_is_the_initial_weights():
    model = make_model("conv")
    rule = make_rule("align-prop", model)
    assert all(torch.equal(b, layer.weight) for b, layer in zip(rule.feedback, synaptic_layers(model)))


@pytest.mark.parametrize("name", ["align-zero", "align-ada"])
def test_setting_theta0_to_the_current_weights_gives_bp(name, family):
    """theta_0 is settable: with theta_0 := theta the rule must be backprop again."""
    model = make_model(family)
    rule = make_rule(name, model, loss_for(family))
    sgd_steps(model, rule, family, steps=3)
    assert not torch.equal(rule.initial_weights()[0], synaptic_layers(model)[0].weight)
    rule.set_initial_parameters({n: p.detach() for n, p in model.named_parameters()})
    assert torch.equal(rule.initial_weights()[0], synaptic_layers(model)[0].weight)
    x, y = make_batch(family, seed=7)
    rule.backward(x, y)
    mine = grads(model)
    model.zero_grad()
    make_rule("bp", model, loss_for(family)).backward(x, y)
    for n, g in grads(model).items():
        torch.testing.assert_close(mine[n], g, rtol=1e-9, atol=1e-11)
    with pytest.raises(KeyError):
        rule.set_initial_parameters({"nope": torch.zeros(1)})


def test_dfa_matrices_load_before_the_first_pass():
    model = make_model("mlp")
    rule = make_rule("dfa", model, seed=1)
    x, y = make_batch("mlp")
    rule.backward(x, y)
    fresh = make_rule("dfa", make_model("mlp"), seed=2)
    assert fresh.feedback[1] is None
    fresh.load_state_dict(rule.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.feedback[1:], rule.feedback[1:]))


@pytest.mark.filterwarnings("ignore:for feedback_.*no-op")  # copying values into meta tensors
def test_dfa_matrices_loaded_from_a_cpu_checkpoint_follow_the_models_device_and_dtype():
    """A resumed run loads its checkpoint on the CPU; the lazily made B_l must land where the model is.

    The meta device stands in for a GPU here: a matrix left on the CPU would be the same mistake.
    """
    rule = make_rule("dfa", make_model("mlp"), seed=1)
    rule.backward(*make_batch("mlp"))
    state = {k: v.float() for k, v in rule.state_dict().items()}  # float32, on the CPU
    elsewhere = make_rule("dfa", make_model("mlp").to("meta"), seed=2)
    elsewhere.load_state_dict(state)
    assert all(b.device.type == "meta" and b.dtype == torch.float64 for b in elsewhere.feedback[1:])


def test_fa_feedback_is_drawn_on_the_cpu_generators_device_whatever_the_models_device(monkeypatch):
    """On a GPU, drawing into a CUDA tensor from the CPU generator fails; the draw must happen on the
    generator's device and then move (so the same seed gives the same B everywhere). The meta device
    stands in for the GPU: every draw must be made on the CPU."""
    drawn_on = []
    normal = torch.Tensor.normal_

    def recording(self, *args, **kwargs):
        drawn_on.append(self.device.type)
        return normal(self, *args, **kwargs)

    model = make_model("mlp").to("meta")
    monkeypatch.setattr(torch.Tensor, "normal_", recording)
    rule = make_rule("fa", model, seed=3)
    # The meta device holds no values, so the layers skip the draw there (runs/memory.py estimates on
    # it); what must hold is that no draw is ever made on the model's own device.
    assert "meta" not in drawn_on
    assert [b.shape for b in rule.feedback] == [layer.weight.shape for layer in rule.layers]
    assert all(b.device.type == "meta" for b in rule.feedback)
