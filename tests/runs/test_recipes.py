"""Optimiser recipes: momentum, weight decay and learning-rate schedules, for every rule, recorded
in results, resumed exactly, and leaving the runs recorded without them the same runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import fast, make_batch, make_model
from widealign.rules import RULES, learns_feedback, make_rule
from widealign.runs import RunConfig, train_run
from widealign.runs.config import build_optimizer, build_scheduler
from widealign.runs.identity import run_identity
from widealign.runs.run import batch_key
from widealign.sweeps.catalogue import Family
from widealign.sweeps.sweep import batch_groups
from widealign.train import Trainer
from widealign.train.batched import check_batchable

SMALL = dict(dataset="digits", model="mlp", width=8, train_size=100, batch_size=50, dtype="float64")
RECIPES = dict(momentum=0.9, weight_decay=1e-3, schedule="step", step_size=1, gamma=0.5)


def test_the_defaults_build_the_papers_plain_sgd():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(RunConfig(lr=0.5), params)
    assert type(sgd) is torch.optim.SGD
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.5, 0, 0, False)
    assert build_scheduler(RunConfig(lr=0.5).resolved(), sgd) is None
    adam = build_optimizer(RunConfig(optimizer="adam", lr=0.1, weight_decay=0.01), params)
    assert adam.param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize("rule", [r for r in RULES if RULES[r].__module__.startswith("widealign.")])
def test_momentum_and_weight_decay_apply_to_every_rule(rule):
    """Two steps of the run's optimiser move theta by -lr * v, v = mu v + g + wd theta, with g what
    the rule left in .grad: the recipe acts on every rule's update alike, and on the feedback
    matrices that the learned-feedback rules leave to the optimiser."""
    cfg = RunConfig(rule=rule, lr=0.1, momentum=0.9, weight_decay=0.01)
    model = make_model("mlp")
    r = make_rule(rule, model, "mse", seed=0, **fast(rule))
    params = {f"model.{n}": p for n, p in model.named_parameters()}
    params |= {f"rule.{n}": p for n, p in r.named_parameters()}
    assert learns_feedback(rule) == any(n.startswith("rule.") for n in params)
    opt = build_optimizer(cfg, params.values())
    velocity: dict[str, torch.Tensor] = {}
    for step in range(2):
        x, y = make_batch("mlp", seed=step)
        opt.zero_grad(set_to_none=True)
        r.backward(x, y)
        before = {n: p.detach().clone() for n, p in params.items()}
        moved = {n: p.grad.clone() + 0.01 * p.detach() for n, p in params.items() if p.grad is not None}
        opt.step()
        for n, p in params.items():
            if n not in moved:
                assert torch.equal(p.detach(), before[n])
                continue
            velocity[n] = moved[n] if n not in velocity else 0.9 * velocity[n] + moved[n]
            torch.testing.assert_close(p.detach(), before[n] - 0.1 * velocity[n], rtol=1e-12, atol=1e-15)


def test_step_and_cosine_schedules_are_recorded_per_epoch(tmp_path):
    step = train_run(RunConfig(**SMALL, epochs=3, lr=0.4, schedule="step", step_size=2, gamma=0.5), None,
                     progress=False)  # fmt: skip
    assert [e["lr"] for e in step["epochs"]] == [0.4, 0.4, 0.2]
    cosine = train_run(RunConfig(**SMALL, epochs=4, lr=0.4, schedule="cosine"), tmp_path, progress=False)
    expected = [0.2 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [e["lr"] for e in cosine["epochs"]] == pytest.approx(expected, rel=1e-12)
    config = json.loads((tmp_path / "result.json").read_text())["config"]
    assert (config["schedule"], config["momentum"], config["weight_decay"]) == ("cosine", 0.0, 0.0)
    assert "lr" not in train_run(RunConfig(**SMALL, epochs=1), None, progress=False)["epochs"][0]


COSINE = dict(momentum=0.9, weight_decay=1e-3, schedule="cosine")


@pytest.mark.parametrize("recipe", [RECIPES, COSINE], ids=["step", "cosine"])
def test_a_scheduled_run_resumes_to_the_uninterrupted_numbers(recipe, tmp_path):
    cfg = RunConfig(rule="fa", **SMALL, epochs=3, lr=0.5, **recipe)
    straight = train_run(cfg, tmp_path / "a", progress=False)

    def interrupt(record):
        if record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "b", progress=False, on_epoch=interrupt)
    resumed = train_run(cfg, tmp_path / "b", progress=False)
    assert resumed["resumed_from_epoch"] == 1

    def numbers(r):
        return [(e["train_loss"], e["test_loss"], e["lr"]) for e in r["epochs"]]

    assert numbers(resumed) == numbers(straight)
    if recipe is RECIPES:
        assert [e["lr"] for e in straight["epochs"]] == [0.5, 0.25, 0.125]


def test_a_checkpoint_without_schedule_state_is_refused_by_a_scheduled_trainer():
    model = make_model("mlp")
    rule = make_rule("bp", model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch("mlp")
    plain = Trainer(model, rule, opt, [(x, y)], progress=False).state_dict()
    scheduled = Trainer(model, rule, opt, [(x, y)], progress=False,
                        scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))  # fmt: skip
    with pytest.raises(ValueError, match="has no learning-rate schedule state"):
        scheduled.load_state_dict(plain)


def test_defaults_leave_run_identities_and_ids_unchanged():
    base = RunConfig(**SMALL).resolved().as_dict()
    added = ("momentum", "weight_decay", "schedule", "step_size", "gamma")
    older = {k: v for k, v in base.items() if k not in added}
    assert run_identity(base) == run_identity(older)
    family = Family("f", 1, "", "train", {"epochs": 1}, [{"rule": ["bp", "fa"]}])
    ids = [t.run_id for t in family.tasks()]
    defaults = dict(momentum=0.0, weight_decay=0, schedule="none", step_size=None, gamma=0.1)
    assert [t.run_id for t in family.with_overrides(defaults).tasks()] == ids
    for key, value in (("momentum", 0.9), ("weight_decay", 1e-4), ("schedule", "cosine")):
        assert family.with_overrides({key: value}).tasks()[0].run_id != ids[0]


def test_a_result_recorded_before_the_fields_is_the_same_run(tmp_path):
    cfg = RunConfig(**SMALL, epochs=1)
    first = train_run(cfg, tmp_path, progress=False)
    record = json.loads((tmp_path / "result.json").read_text())
    for key in ("momentum", "weight_decay", "schedule", "step_size", "gamma"):
        del record["config"][key]
    del record["digest"], record["checkpoint_sha256"]  # as a record written before these fields
    (tmp_path / "result.json").write_text(json.dumps(record))
    again = train_run(cfg, tmp_path, progress=False)
    assert again.get("already_complete") and again["epochs"] == first["epochs"]
    with pytest.raises(ValueError, match="different configuration.*momentum"):
        train_run(RunConfig(**{**cfg.as_dict(), "momentum": 0.5}), tmp_path, progress=False)


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (dict(momentum=-0.1), r"momentum must be in \[0, 1\)"),
        (dict(weight_decay=-1e-4), "weight decay must be a non-negative number"),
        (dict(optimizer="adam", momentum=0.9), "momentum goes with optimizer sgd"),
        (dict(schedule="step"), "schedule step needs step_size"),
        (dict(schedule="step", step_size=2, gamma=0), r"gamma .* must be in \(0, 1\]"),
        (dict(step_size=2), "step_size and gamma go with schedule step, not none"),
        (dict(schedule="cosine", gamma=0.5), "step_size and gamma go with schedule step, not cosine"),
        (dict(schedule="cosin"), "unknown schedule 'cosin'; did you mean cosine?"),
    ],
)
def test_bad_recipes_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**SMALL, **fields).resolved()


@pytest.mark.parametrize("recipe", [dict(momentum=0.9), dict(weight_decay=1e-3), dict(schedule="cosine")])
def test_runs_with_a_recipe_train_separately_not_batched(recipe):
    assert batch_key(RunConfig(**SMALL)) is not None
    assert batch_key(RunConfig(**SMALL, **recipe)) is None
    family = Family("f", 1, "", "train", {**SMALL, "epochs": 1, **recipe}, [{"seed": [0, 1, 2]}])
    assert [len(unit) for unit in batch_groups(family.tasks(), 3, measure=False)] == [1, 1, 1]
    plain = Family("f", 1, "", "train", {**SMALL, "epochs": 1}, [{"seed": [0, 1, 2]}])
    assert [len(unit) for unit in batch_groups(plain.tasks(), 3, measure=False)] == [3]


def test_a_batched_run_refuses_a_scheduled_member():
    model = make_model("mlp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch("mlp")
    from widealign.data import Dataset

    data = Dataset("d", x, y, x[:0], y[:0], "regression", 3, "mse")
    member = Trainer(model, make_rule("bp", model), opt, data, 4, progress=False,
                     scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))  # fmt: skip
    with pytest.raises(ValueError, match="scheduled runs train one at a time"):
        check_batchable([member])
