"""Bundled data: the digits split and the Add-task generator (docs/method.md#experiments)."""

from __future__ import annotations

import pytest
import torch

from widealign.data import add_targets, batches, eval_order, load_dataset, load_digits, make_add_task


def test_digits_is_a_fixed_stratified_split_in_the_papers_format():
    d = load_digits()
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    assert d.x_train.min() >= 0 and d.x_train.max() <= 1
    labels = d.y_train.argmax(1)
    torch.testing.assert_close(d.y_train, torch.nn.functional.one_hot(labels, 10).float() - 0.1)
    assert torch.bincount(d.y_test.argmax(1)).min() >= 35  # every class is held out
    again = load_digits()
    assert torch.equal(again.x_test, d.x_test)


def test_add_targets_follow_the_formula():
    x = torch.tensor([[1.0, 0, 1, 1, 0, 1, 0, 0]]).unsqueeze(-1)
    y = add_targets(x)[0, :, 0]
    expected = [
        0.5 + 0.5 * (x[0, t - 2, 0] if t >= 2 else 0) - 0.25 * (x[0, t - 5, 0] if t >= 5 else 0)
        for t in range(8)
    ]
    torch.testing.assert_close(y, torch.tensor(expected))


def test_constant_half_predictor_scores_about_9_3_as_the_spec_says():
    """E[(y_t - 0.5)^2] is 0.125 for t in 2..4 and 0.09375 from t = 5: 3 * 0.125 + 95 * 0.09375."""
    d = make_add_task(n_train=3000, n_test=100)
    assert d.x_train.shape == (3000, 100, 1)
    loss = ((d.y_train - 0.5) ** 2).sum((1, 2)).mean()
    assert loss.item() == pytest.approx(3 * 0.125 + 95 * 0.09375, rel=0.02)


def test_batches_visit_every_example_once_in_a_seeded_order():
    x = torch.arange(23.0)[:, None]
    seen = torch.cat([xb for xb, _ in batches(x, x, 5, torch.Generator().manual_seed(0))])
    assert sorted(seen[:, 0].tolist()) == list(range(23))
    again = torch.cat([xb for xb, _ in batches(x, x, 5, torch.Generator().manual_seed(0))])
    assert torch.equal(seen, again)


def test_unknown_dataset_and_bad_subset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="subset size"):
        load_digits().subset(0)
    assert len(load_digits().subset(45).x_train) == 45


def test_evaluation_batches_follow_one_fixed_shuffled_order():
    """Batch statistics at evaluation: the held-out order is fixed, shuffled and the same every call."""
    d = load_digits()
    order = eval_order(d.n_test)
    assert sorted(order.tolist()) == list(range(d.n_test)) and order[:20].tolist() != list(range(20))
    x = torch.cat([xb for xb, _ in d.test_batches(100)])
    assert torch.equal(x, d.x_test[order])
    assert torch.equal(x, torch.cat([xb for xb, _ in d.test_batches(100)]))
    x_train = torch.cat([xb for xb, _ in d.train_eval_batches(100)])
    assert torch.equal(x_train, d.x_train[eval_order(d.n_train)])
