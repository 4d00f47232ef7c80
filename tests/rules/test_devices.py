"""Rules keep everything on the model's device, so that GPU runs work (the meta device stands in for
a GPU here: a tensor left on the CPU shows up in the rule's state or fails an elementwise op)."""

from __future__ import annotations

import pytest
import torch

from conftest import fast, loss_for, make_batch, make_model
from widealign.rules import RULES, make_rule


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_steps_and_keeps_its_state_on_the_models_device(name, family):
    if family == "rnn" and not RULES[name].supports_recurrent:
        pytest.skip(f"{name} is feed-forward only")
    model = make_model(family).to("meta")
    x, y = (t.to("meta") for t in make_batch(family))
    rule = make_rule(name, model, loss_for(family), seed=0, **fast(name))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        rule.backward(x, y)
        optimizer.step()
    state = rule.state_dict()
    assert state or name in ("bp", "readout") or getattr(rule, "weight_transport", False)  # stateless
    assert {t.device.type for t in state.values()} <= {"meta"}
    assert {p.grad.device.type for p in model.parameters() if p.grad is not None} == {"meta"}
