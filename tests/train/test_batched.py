"""Batched runs: every member of a batched run equals its separate run (float64), for every rule."""

from __future__ import annotations

import pytest
import torch

from widealign.data.base import Dataset
from widealign.models import MLP, RNN, ConvNet
from widealign.rules import RULES, make_rule
from widealign.storage import load_checkpoint
from widealign.train.batched import BatchedTrainer
from widealign.train.loop import Trainer

BATCHABLE = sorted(name for name, cls in RULES.items() if cls.batchable)
MODELS = {
    "convnet": lambda seed: ConvNet(2, 3, [3, 4], [1, 2], seed=seed),
    "mlp": lambda seed: MLP(2 * 6 * 6, 3, [5, 4], seed=seed),
    "rnn": lambda seed: RNN(2, 5, 1, seed=seed),
}


def _data(kind: str) -> tuple[Dataset, str]:
    g = torch.Generator().manual_seed(7)
    if kind == "rnn":
        x = torch.randn(30, 4, 2, generator=g, dtype=torch.float64)
        y = x.sum(-1, keepdim=True).cumsum(1) * 0.3
        return Dataset("seq", x[:20], y[:20], x[20:], y[20:], "regression", 1, "sequence-mse"), "sequence-mse"
    x = torch.randn(30, 2, 6, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,), generator=g)
    y = torch.nn.functional.one_hot(labels, 3).double() - 0.1
    return Dataset("img", x[:20], y[:20], x[20:], y[20:], "classification", 3), "mse"


def _trainers(rule: str, kind: str, seeds: list[int], lrs: list[float], data: Dataset, loss: str, **kw):
    trainers = []
    for seed, lr in zip(seeds, lrs):
        model = MODELS[kind](seed).double()
        r = make_rule(rule, model, loss, seed=seed, **kw.get("rule_kwargs", {}))
        opt = kw.get("optimizer", torch.optim.SGD)([*model.parameters(), *r.feedback_parameters()], lr=lr)
        ckpt = kw.get("checkpoints", [None] * len(seeds))[len(trainers)]
        trainers.append(Trainer(model, r, opt, data, 8, seed=seed, progress=False, checkpoint=ckpt))
    return trainers


def _assert_same(separate: list[Trainer], batched: list[Trainer]) -> None:
    for a, b in zip(separate, batched, strict=True):
        assert len(a.history) == len(b.history)
        for ra, rb in zip(a.history, b.history):
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                va, vb = getattr(ra, key), getattr(rb, key)
                assert (va is None) == (vb is None)
                if va is not None:
                    assert vb == pytest.approx(va, rel=1e-10, abs=1e-12), key
        for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
            torch.testing.assert_close(pb, pa, rtol=1e-10, atol=1e-12, msg=name)
        sa, sb = a.rule.state_dict(), b.rule.state_dict()
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sb[key], sa[key], rtol=1e-10, atol=1e-12, msg=key)


def _run_both(rule: str, kind: str, seeds: list[int], lrs: list[float], epochs: int = 2, **kw):
    data, loss = _data(kind)
    separate = _trainers(rule, kind, seeds, lrs, data, loss, **kw)
    for t in separate:
        t.fit(epochs)
    members = _trainers(rule, kind, seeds, lrs, data, loss, **kw)
    options = dict(kw.get("stack_options", {}))
    BatchedTrainer(members, rule_options=options, progress=False).fit(epochs)
    return separate, members


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("rule", BATCHABLE)
def test_every_member_equals_its_separate_run(rule: str, kind: str) -> None:
    if kind == "rnn" and not RULES[rule].supports_recurrent:
        pytest.skip(f"{rule} is feed-forward only")
    # Every member its own learning rate, learned feedback included (it is in the optimiser).
    separate, members = _run_both(rule, kind, [0, 1, 2], [0.05, 0.02, 0.1])
    _assert_same(separate, members)
    # The members really are different runs.
    assert separate[0].history[-1].train_loss != separate[1].history[-1].train_loss


@pytest.mark.parametrize("kind", ["convnet", "rnn"])
@pytest.mark.parametrize("rule", ["align-ada", "align-zero", "readout"])
def test_reference_variants_batch(rule: str, kind: str) -> None:
    kw = {"rule_kwargs": {"variant": "reference"}, "stack_options": {"variant": "reference"}}
    separate, members = _run_both(rule, kind, [3, 4], [0.05, 0.1], **kw)
    _assert_same(separate, members)


def test_adam_members_share_a_learning_rate() -> None:
    # On the MLP: in the conv net a bias before the batch-axis normalisation has a gradient that is
    # zero up to rounding, which Adam scales up to steps of size lr, so rounding alone differs there.
    separate, members = _run_both("fa", "mlp", [0, 1], [0.01, 0.01], optimizer=torch.optim.Adam)
    _assert_same(separate, members)
    data, loss = _data("mlp")
    mixed = _trainers("fa", "mlp", [0, 1], [0.01, 0.02], data, loss, optimizer=torch.optim.Adam)
    with pytest.raises(ValueError, match="share a learning rate"):
        BatchedTrainer(mixed, progress=False)


def test_a_diverging_member_stops_and_the_others_go_on() -> None:
    seeds, lrs = [0, 1, 2], [0.05, 1e200, 0.02]
    data, loss = _data("mlp")
    members = _trainers("bp", "mlp", seeds, lrs, data, loss)
    diverged = BatchedTrainer(members, progress=False).fit(3)
    assert list(diverged) == [1]
    separate = _trainers("bp", "mlp", seeds, lrs, data, loss)
    for k, t in enumerate(separate):
        if k == 1:
            with pytest.raises(Exception, match="diverged") as err:
                t.fit(3)
            assert str(err.value) == str(diverged[1])
        else:
            t.fit(3)
    _assert_same([separate[0], separate[2]], [members[0], members[2]])
    # The diverged run keeps the epochs before the step that diverged, as its separate run does.
    assert [r.train_loss for r in members[1].history] == [r.train_loss for r in separate[1].history]


@pytest.mark.parametrize("rule", ["align-zero", "dfa", "brsf", "weight-mirror"])
def test_members_write_checkpoints_a_separate_run_resumes(tmp_path, rule: str) -> None:
    data, loss = _data("convnet")
    seeds = [0, 1]
    lrs = [0.05, 0.02]
    paths = [tmp_path / f"run{k}.pt" for k in range(2)]
    members = _trainers(rule, "convnet", seeds, lrs, data, loss, checkpoints=paths)
    BatchedTrainer(members, progress=False).fit(1)
    assert load_checkpoint(paths[0])["history"][0]["epoch"] == 1
    resumed = _trainers(rule, "convnet", seeds, lrs, data, loss, checkpoints=paths)
    for t in resumed:
        t.fit(3)
        assert t.resumed_from == 1
    uninterrupted = _trainers(rule, "convnet", seeds, lrs, data, loss)
    for t in uninterrupted:
        t.fit(3)
    _assert_same(uninterrupted, resumed)


def test_rules_that_cannot_batch_are_refused() -> None:
    refused = sorted(name for name, cls in RULES.items() if not cls.batchable)
    assert refused, "every rule batches: drop this test"
    data, loss = _data("mlp")
    for name in refused:
        members = _trainers(name, "mlp", [0, 1], [0.01, 0.01], data, loss)
        with pytest.raises(ValueError, match=f"{name} cannot train in a batched run"):
            BatchedTrainer(members, progress=False)


def test_members_must_share_the_rules_own_settings() -> None:
    data, loss = _data("mlp")
    members = _trainers("kolen-pollack", "mlp", [0, 1], [0.1, 0.2], data, loss)
    members[1].rule.weight_decay = 1e-3
    with pytest.raises(ValueError, match="must share the rule's weight_decay"):
        BatchedTrainer(members, progress=False)


def test_autocast_runs_train_one_at_a_time() -> None:
    """A batched run does not take autocast members, and autocast configurations get no batch key."""
    from widealign.runs import RunConfig
    from widealign.runs.run import batch_key

    data, loss = _data("mlp")
    trainers = _trainers("fa", "mlp", [0, 1], [0.01, 0.01], data, loss)
    trainers[1].autocast = "bf16"
    with pytest.raises(ValueError, match="without autocast"):
        BatchedTrainer(trainers, progress=False)
    assert batch_key(RunConfig(rule="fa", width=8)) is not None
    assert batch_key(RunConfig(rule="fa", width=8, autocast="bf16")) is None
