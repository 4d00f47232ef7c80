"""Losses: integer class labels are the paper's targets (one-hot minus 0.1) for mse, in every rule."""

from __future__ import annotations

import pytest
import torch

from conftest import grads, make_model
from widealign.losses import cross_entropy, label_targets, mse
from widealign.rules import RULES, make_rule


def test_labels_become_one_hot_minus_a_tenth():
    f = torch.zeros(3, 4, dtype=torch.float64)
    targets = label_targets(f, torch.tensor([2, 0, 3]))
    rows = [[-0.1, -0.1, 0.9, -0.1], [0.9, -0.1, -0.1, -0.1], [-0.1, -0.1, -0.1, 0.9]]
    assert targets.dtype == torch.float64 and torch.equal(targets, torch.tensor(rows, dtype=torch.float64))
    floats = torch.randn(3, 4)
    assert label_targets(f, floats) is floats


def test_mse_of_labels_equals_mse_of_their_targets_and_ce_is_unchanged():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (6,), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 5).double() - 0.1
    assert mse(f, labels) == mse(f, onehot)
    assert mse(f, labels) != mse(f, torch.nn.functional.one_hot(labels, 5).double())
    assert cross_entropy(f, labels) == cross_entropy(f, onehot)


def test_integer_targets_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="one dimension fewer"):
        mse(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_gives_the_same_update_for_labels_and_for_targets(name):
    x = torch.rand(8, 2, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2, 1])
    updates = []
    for y in (labels, torch.nn.functional.one_hot(labels, 3).double() - 0.1):
        model = make_model("conv")
        loss, _ = make_rule(name, model, "mse", seed=0).backward(x, y)
        updates.append((loss, grads(model)))
    (loss_a, a), (loss_b, b) = updates
    assert loss_a == loss_b
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] is None and b[key] is None) or torch.equal(a[key], b[key])
    assert any(g is not None and g.abs().sum() > 0 for g in a.values())
