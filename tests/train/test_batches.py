"""The trainer on any iterable of (x, y) batches: DataLoaders, lists, integer labels, other dtypes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from widealign.data import load_digits
from widealign.models import MLP
from widealign.rules import make_rule
from widealign.train import BatchIterables, Trainer, evaluate


def digits(n_train: int = 200, n_test: int = 60):
    d = load_digits()
    return d.x_train[:n_train], d.y_train[:n_train], d.x_test[:n_test], d.y_test[:n_test]


def make(rule: str = "align-ada", dtype=torch.float32):
    model = MLP(64, 10, [16, 16], seed=0).to(dtype)
    return model, make_rule(rule, model, seed=0), torch.optim.SGD(model.parameters(), lr=1.0)


def history(trainer):
    return [(r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in trainer.history]


def test_a_dataloader_of_labels_trains_like_a_hand_written_loop_on_targets():
    x, y, xt, yt = digits()
    loader = DataLoader(TensorDataset(x, y.argmax(-1)), batch_size=50)  # integer labels
    test_loader = DataLoader(TensorDataset(xt, yt.argmax(-1)), batch_size=30)
    model, rule, opt = make()
    trainer = Trainer(model, rule, opt, loader, test_data=test_loader, progress=False)
    trainer.fit(2)

    ref_model, ref_rule, ref_opt = make()
    losses = []
    for _ in range(2):
        total = 0.0
        for xb, yb in zip(x.split(50), y.split(50)):  # the same batches, one-hot minus 0.1 targets
            ref_opt.zero_grad()
            loss, _ = ref_rule.backward(xb, yb)
            ref_opt.step()
            total += float(loss) * len(xb)
        losses.append(total / len(x))
    test_loss, test_acc = evaluate(ref_model, ref_rule.loss_fn, zip(xt.split(30), yt.split(30)), True)
    assert [r.train_loss for r in trainer.history] == losses
    assert (trainer.history[-1].test_loss, trainer.history[-1].test_acc) == (test_loss, test_acc)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


def test_batches_are_moved_to_the_models_dtype():
    x, y, xt, yt = digits()
    batches = list(zip(x.split(50), y.split(50)))  # float32 batches
    model, rule, opt = make(dtype=torch.float64)
    Trainer(model, rule, opt, batches, progress=False).fit(1)
    ref, ref_rule, ref_opt = make(dtype=torch.float64)
    Trainer(ref, ref_rule, ref_opt, [(a.double(), b.double()) for a, b in batches], progress=False).fit(1)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_without_held_out_batches_the_held_out_metrics_are_none():
    x, y, _, _ = digits()
    model, rule, opt = make("bp")
    (record,) = Trainer(model, rule, opt, list(zip(x.split(50), y.split(50))), progress=False).fit(1)
    assert record.test_loss is None and record.test_acc is None and record.train_acc is not None


def test_regression_batches_report_no_accuracy():
    x, y, _, _ = digits()
    model, rule, opt = make("bp")
    trainer = Trainer(model, rule, opt, [(x, y)], test_data=[(x, y)], task="regression", progress=False)
    (record,) = trainer.fit(1)
    assert record.train_acc is None and record.test_acc is None and record.test_loss > 0


def test_bad_batch_sources_are_refused():
    x, y, _, _ = digits()
    model, rule, opt = make("bp")
    with pytest.raises(ValueError, match="one-pass iterator"):
        Trainer(model, rule, opt, iter([(x, y)]))
    with pytest.raises(ValueError, match="task must be"):
        BatchIterables([(x, y)], task="ranking")
    data = load_digits()
    with pytest.raises(ValueError, match="not a data set"):
        Trainer(model, rule, opt, data, 50, test_data=[(x, y)])
    with pytest.raises(ValueError, match="batch size must be positive"):
        Trainer(model, rule, opt, data)
    with pytest.raises(ValueError, match="no batches"):
        Trainer(model, rule, opt, [], progress=False).fit(1)
