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
    optimizer = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        rule.backward(x, y)
        optimizer.step()
    state = rule.state_dict()
    assert state or name in ("bp", "readout") or getattr(rule, "weight_transport", False)  # stateless
    assert {t.device.type for t in state.values()} <= {"meta"}
    assert {p.grad.device.type for p in model.parameters() if p.grad is not None} == {"meta"}


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_steps_under_bf16_autocast_with_float32_updates(name, family):
    """``--autocast bf16``: forward products in bfloat16 (the layerwise rules' own convolution
    gradients included), the updates in the parameters' float32, close to the float32 ones."""
    if family == "rnn" and not RULES[name].supports_recurrent:
        pytest.skip(f"{name} is feed-forward only")
    x, y = (t.float() for t in make_batch(family))
    updates = []
    for autocast in (False, True):
        model = make_model(family).float()
        rule = make_rule(name, model, loss_for(family), seed=0, **fast(name))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            rule.backward(x, y)
        updates.append([p.grad for p in model.parameters() if p.grad is not None])
    assert all(g.dtype == torch.float32 for g in updates[1])
    assert any(not torch.equal(a, b) for a, b in zip(*updates))
    scale = max(float(a.abs().max()) for a in updates[0])
    assert max(float((a - b).abs().max()) for a, b in zip(*updates)) < 0.1 * scale


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_gives_the_cpus_update_on_a_gpu(name, family):
    """In float64 a rule's update on a GPU is its update on the CPU (up to the kernels' rounding)."""
    if family == "rnn" and not RULES[name].supports_recurrent:
        pytest.skip(f"{name} is feed-forward only")
    x, y = make_batch(family)
    updates = []
    for device in ("cpu", "cuda"):
        model = make_model(family).to(device)
        rule = make_rule(name, model, loss_for(family), seed=0, **fast(name))
        rule.backward(x.to(device), y.to(device))
        updates.append([p.grad.cpu() for p in model.parameters() if p.grad is not None])
    assert len(updates[0]) == len(updates[1]) > 0
    for a, b in zip(*updates):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)
