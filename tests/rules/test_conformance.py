"""Every registered rule through the public conformance kit (widealign.testing), the kit's checks
failing on rules that break the contract, and gradient accumulation like loss.backward()."""

from __future__ import annotations

import pytest
import torch

from conftest import grads, make_batch, make_model
from widealign import testing
from widealign.rules import RULES, make_rule
from widealign.rules.fa import FeedbackAlignment

PACKAGED = [name for name, cls in RULES.items() if cls.__module__.startswith("widealign.")]

#: Rules for which two half-batches do not add up to one batch, and why.
NOT_LINEAR_IN_THE_BATCH = {
    "brsf": "draws new random signs at every step",
    "pal-simplified": "draws forward noise at every step and steps B inside backward",
    "predictive-coding": (
        "stops relaxing at a tolerance relative to the errors' size, so each half runs its own "
        "number of iterations, and its feedback steps inside backward"
    ),
    "activation-relaxation": (
        "starts relaxing at the feedforward activity, whose residual after finitely many "
        "iterations does not scale with the loss's 1/batch (start='zero' is linear)"
    ),
}


@pytest.mark.parametrize("name", PACKAGED)
def test_every_rule_passes_the_state_round_trip_and_accumulation_checks(name):
    kinds = ["mlp", "convnet"] + (["rnn"] if RULES[name].supports_recurrent else [])
    for kind in kinds:
        testing.check_state_round_trip(name, kind)
        testing.check_accumulation(name, kind)


@pytest.mark.parametrize("name", PACKAGED)
def test_two_half_batches_accumulate_to_one_batch_where_the_rule_is_linear_in_the_batch(name):
    if name in NOT_LINEAR_IN_THE_BATCH:
        with pytest.raises(AssertionError, match="two halves"):  # the exclusion is still true
            testing.check_half_batches(name)
    else:
        testing.check_half_batches(name)


def test_activation_relaxation_from_zero_is_linear_in_the_batch():
    testing.check_half_batches("activation-relaxation", start="zero")


@pytest.mark.parametrize("name", [n for n in PACKAGED if n not in NOT_LINEAR_IN_THE_BATCH])
def test_backward_twice_without_zero_grad_doubles_the_update(name):
    model = make_model("mlp")
    rule = make_rule(name, model)
    x, y = make_batch("mlp")
    rule.backward(x, y)
    once = grads(model)
    rule.backward(x, y)
    for n, g in grads(model).items():
        if once[n] is None:
            assert g is None, n
        else:
            torch.testing.assert_close(g, 2 * once[n], rtol=1e-12, atol=1e-14, msg=n)


def test_zero_grad_then_backward_is_the_update_alone():
    model = make_model("mlp")
    rule = make_rule("fa", model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch("mlp")
    rule.backward(x, y)
    once = grads(model)
    optimizer.zero_grad()
    rule.backward(x, y)
    assert all(torch.equal(g, once[n]) for n, g in grads(model).items())


class _ForgetsItsState(FeedbackAlignment):
    """Keeps a step count outside its buffers: a restored rule starts counting again."""

    name = "forgets-its-state"

    def __init__(self, model, loss="mse", seed=0):  # noqa: ANN001
        super().__init__(model, loss, seed)
        self.count = 0

    def _backward(self, x, y):  # noqa: ANN001
        self.count += 1
        loss, output = super()._backward(x, y)
        for p in self.model.parameters():
            p.grad.mul_(self.count)
        return loss, output


class _Overwrites(FeedbackAlignment):
    """Clears .grad before its update, as rule.backward did before it accumulated."""

    name = "overwrites"

    def backward(self, x, y):  # noqa: ANN001
        for p in self.model.parameters():
            p.grad = None
        loss, output = self._backward(x, y)
        return loss.detach(), output.detach()


def test_the_checks_fail_on_rules_that_break_the_contract():
    with pytest.raises(AssertionError, match="the update after loading the state"):
        testing.check_state_round_trip(_ForgetsItsState)
    with pytest.raises(AssertionError, match="held gradient"):
        testing.check_accumulation(_Overwrites)


def test_a_non_batchable_rules_batched_check_is_refused_and_fa_passes_it():
    with pytest.raises(ValueError, match="predictive-coding does not declare batchable"):
        testing.check_batched("predictive-coding")
    testing.check_batched("fa", epochs=1)
