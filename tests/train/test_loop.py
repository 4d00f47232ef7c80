"""The training loop: reproducibility, exact resumption, divergence, and learning on digits."""

from __future__ import annotations

import pytest
import torch

from widealign.data import Dataset, load_digits
from widealign.models import MLP, ConvNet
from widealign.rules import make_rule
from widealign.train import DivergedError, Trainer


def small_digits() -> Dataset:
    d = load_digits()
    return Dataset("digits", d.x_train[:300], d.y_train[:300], d.x_test[:100], d.y_test[:100], d.task, 10)


def make_trainer(rule="align-ada", lr=1.0, checkpoint=None, seed=0, data=None) -> Trainer:
    model = MLP(64, 10, [32, 32], seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Trainer(
        model,
        make_rule(rule, model, seed=seed),
        opt,
        data or small_digits(),
        50,
        seed,
        checkpoint,
        progress=False,
    )


def strip(history):
    return [(r.epoch, r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in history]


def test_same_seed_same_numbers():
    a, b = make_trainer(), make_trainer()
    assert strip(a.fit(3)) == strip(b.fit(3))
    c = make_trainer(seed=1)
    assert strip(c.fit(3)) != strip(a.history)


@pytest.mark.parametrize("rule", ["align-ada", "fa", "dfa"])
def test_resuming_from_a_checkpoint_equals_an_uninterrupted_run(rule, tmp_path):
    straight = make_trainer(rule)
    straight.fit(4)
    ckpt = tmp_path / "run.pt"
    make_trainer(rule, checkpoint=ckpt).fit(2)
    resumed = make_trainer(rule, checkpoint=ckpt, seed=0)
    resumed.fit(4)
    assert resumed.resumed_from == 2
    assert strip(resumed.history) == strip(straight.history)
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)


def test_divergence_stops_with_a_clear_error():
    with pytest.raises(DivergedError, match="diverged.*smaller learning rate"):
        make_trainer("bp", lr=1e8).fit(3)


def test_bad_arguments():
    t = make_trainer()
    with pytest.raises(ValueError, match="batch size"):
        Trainer(t.model, t.rule, t.optimizer, t.data, batch_size=0)
    other = MLP(64, 10, [4])
    with pytest.raises(ValueError, match="different model"):
        Trainer(other, t.rule, t.optimizer, t.data, batch_size=10)
    with pytest.raises(ValueError, match="epochs"):
        t.fit(0)


@pytest.mark.parametrize("rule", ["bp", "align-ada"])
def test_width_64_conv_net_learns_digits_within_five_epochs(rule):
    """Chance is 10%; measured after 5 epochs at lr 5: 59% (bp), 56% (align-ada). 30% leaves 2x headroom."""
    data = load_digits()
    model = ConvNet.preset("kmnist", 1, 10, 64, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    history = Trainer(model, make_rule(rule, model), opt, data, 100, 0, progress=False).fit(5)
    assert history[-1].test_acc > 0.30
    assert history[-1].train_loss < history[0].train_loss


def test_eval_train_records_the_whole_training_set_loss_after_every_epoch():
    """As the authors' Add-task code: after each epoch the training set is evaluated again."""
    from widealign.data import make_add_task
    from widealign.models import RNN
    from widealign.train import evaluate

    data = make_add_task(n_train=60, n_test=20, length=12).to(dtype=torch.float64)
    losses = []
    for epochs in (1, 2):
        model = RNN(1, 8, 1, seed=0).double()
        rule = make_rule("bp", model, "sequence-mse", seed=0)
        trainer = Trainer(
            model,
            rule,
            torch.optim.SGD(model.parameters(), lr=0.01),
            data,
            20,
            0,
            progress=False,
            eval_train=True,
        )
        history = trainer.fit(epochs)
        with torch.no_grad():
            out = model(data.x_train)
            whole = float(((out - data.y_train) ** 2).mean(0).sum())
        assert history[-1].extra["train_eval_loss"] == pytest.approx(whole, rel=1e-12)
        assert history[-1].extra["train_eval_acc"] is None
        assert history[-1].train_loss != pytest.approx(whole, rel=1e-6)  # the running mean is another number
        losses.append([r.extra["train_eval_loss"] for r in history])
    assert losses[1][0] == losses[0][0]
    same = evaluate(model, rule.loss_fn, data.train_eval_batches(20), False)[0]
    assert same == history[-1].extra["train_eval_loss"]
    assert make_trainer().fit(1)[0].extra is None  # off by default


def autocast_run(dtype: torch.dtype, autocast: str | None, rule: str = "bp"):
    """Two epochs of a small conv net on digits, every tensor in ``dtype``."""
    data = small_digits().to(dtype=dtype)
    model = ConvNet.preset("kmnist", 1, 10, 8, seed=0).to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, make_rule(rule, model), opt, data, 50, 0, progress=False, autocast=autocast)
    return strip(trainer.fit(2)), [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("rule", ["bp", "fa"])
def test_bf16_autocast_changes_nothing_in_a_float64_run(rule):
    history, params = autocast_run(torch.float64, None, rule)
    history_bf16, params_bf16 = autocast_run(torch.float64, "bf16", rule)
    assert history_bf16 == history
    assert all(torch.equal(p, q) for p, q in zip(params, params_bf16))


def test_bf16_autocast_is_live_in_a_float32_run():
    history, params = autocast_run(torch.float32, None)
    history_bf16, params_bf16 = autocast_run(torch.float32, "bf16")
    assert history_bf16 != history
    assert all(p.dtype == torch.float32 for p in params_bf16)
    assert max(float((p - q).abs().max()) for p, q in zip(params, params_bf16)) > 1e-4
    # bfloat16 keeps 8 bits of mantissa: the same training, only rounded differently
    assert abs(history_bf16[-1][1] - history[-1][1]) < 0.1 * history[-1][1]


def test_unknown_autocast_is_a_one_line_error():
    t = make_trainer()
    with pytest.raises(ValueError, match="unknown autocast 'fp16'; choose one of bf16 or none"):
        Trainer(t.model, t.rule, t.optimizer, t.data, 50, autocast="fp16")


def test_a_compiled_run_gives_the_uncompiled_runs_numbers_in_float64():
    d = small_digits()
    data = Dataset("digits", d.x_train.double(), d.y_train, d.x_test.double(), d.y_test, d.task, 10)
    runs = []
    for compile_ in (False, True):
        model = MLP(64, 10, [16], seed=0).double()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        trainer = Trainer(model, make_rule("bp", model), opt, data, 100, 0, progress=False, compile=compile_)
        runs.append((strip(trainer.fit(1)), torch.cat([p.detach().flatten() for p in model.parameters()])))
    assert getattr(model.forward, "_widealign_compiled", False)
    (h0, p0), (h1, p1) = runs
    torch.testing.assert_close(p1, p0, rtol=1e-10, atol=1e-12)
    for a, b in zip(h0, h1):
        assert a[0] == b[0] and a[1:] == pytest.approx(b[1:], rel=1e-9)
