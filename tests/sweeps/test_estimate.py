"""Run-time estimates: the counting is exact, each run shape is timed once, every run kind can be timed."""

from __future__ import annotations

import math

import pytest

from widealign.cli.main import main
from widealign.runs.config import RunConfig
from widealign.runs.memory import estimate_memory, size_text
from widealign.sweeps import estimate
from widealign.sweeps.catalogue import Task, load_family
from widealign.sweeps.estimate import Cost, cost_key, estimate_family, format_estimate, measure_cost


def width_family(**overrides):
    base = {"sweep.width": [8], "sweep.rule": ["bp", "fa"], "sweep.lr": [5.0, 1.0], "epochs": 2}
    return load_family("width").smoke_version().with_overrides(base | overrides)


@pytest.fixture
def fixed_cost(monkeypatch):
    """Replace timing by a known cost and record which tasks were timed."""
    timed: list[Task] = []

    def fake(task: Task, steps: int = 3) -> Cost:
        timed.append(task)
        return Cost(step=0.5, eval_batch=0.25, per_epoch=1.0)

    monkeypatch.setattr(estimate, "measure_cost", fake)
    return timed


def test_runs_differing_only_in_lr_share_one_measurement(fixed_cost):
    estimates = estimate_family(width_family(), progress=False)
    assert len(estimates) == 4
    assert sorted((t.config["rule"], t.config["width"]) for t in fixed_cost) == [("bp", 8), ("fa", 8)]


def test_a_run_costs_epochs_times_steps_eval_batches_and_extras(fixed_cost):
    for e in estimate_family(width_family(), progress=False):
        # digits: 1437 training and 360 held-out images in batches of 100
        assert (e.epochs, e.steps_per_epoch, e.eval_batches) == (2, 15, 4)
        assert e.seconds == 2 * (15 * 0.5 + 4 * 0.25 + 1.0)
    small = estimate_family(width_family(train_size=450, batch_size=64), progress=False)
    assert {(e.steps_per_epoch, e.eval_batches) for e in small} == {
        (math.ceil(450 / 64), math.ceil(360 / 64))
    }


def test_full_versions_count_the_papers_data_sizes(fixed_cost):
    family = load_family("width").with_overrides(
        {"sweep.width": [8], "sweep.rule": ["bp"], "sweep.lr": [5.0]}
    )
    counts = {
        e.shape["dataset"]: (e.epochs, e.steps_per_epoch, e.eval_batches)
        for e in estimate_family(family, progress=False)
    }
    assert counts == {"cifar10": (150, 450, 50), "kmnist": (100, 550, 50)}


def test_song2021_runs_count_their_full_batch_steps(fixed_cost):
    family = load_family("song2021").smoke_version().with_overrides({"steps": 40})
    estimates = estimate_family(family, progress=False)
    assert {(e.epochs, e.steps_per_epoch, e.eval_batches) for e in estimates} == {(1, 41, 0)}
    assert len(fixed_cost) < len(estimates)  # lambda and the seed do not change the cost


def test_cost_key_ignores_what_does_not_change_a_step():
    a = Task("train", {"rule": "bp", "width": 8, "lr": 5.0, "seed": 0, "epochs": 3}, "a")
    same = Task(
        "train", {"rule": "bp", "width": 8, "lr": 1.0, "seed": 7, "epochs": 9, "train_size": 1400}, "b"
    )
    assert cost_key(a) == cost_key(same)
    changes = ({"width": 16}, {"rule": "fa"}, {"batch_size": 50}, {"dataset": "add"}, {"train_size": 45})
    for change in changes:  # train_size 45 trains batches of 45
        assert cost_key(Task("train", a.config | change, "c")) != cost_key(a)


@pytest.mark.parametrize(
    "kind,config",
    [
        ("train", {"rule": "align-ada", "width": 8, "epochs": 1}),
        ("train", {"rule": "align-zero", "dataset": "add", "width": 8, "epochs": 1}),
        ("alignment", {"mode": "score", "width": 8, "draws": 3}),
        ("alignment", {"mode": "update", "rule": "fa", "width": 8}),
        ("song2021", {"width": 50, "n": 20, "d": 10}),
    ],
)
def test_every_run_kind_is_timed_through_its_own_code(kind, config):
    cost = measure_cost(Task(kind, config, "x"), steps=2)
    assert all(math.isfinite(v) and v >= 0 for v in (cost.step, cost.eval_batch, cost.per_epoch))
    assert cost.step > 0
    if kind == "alignment":
        assert cost.per_epoch > 0  # the alignment score, or update_alignment, after every epoch
    if kind != "song2021":
        assert cost.eval_batch > 0


def test_timing_steps_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        measure_cost(Task("train", {"width": 8}, "x"), steps=0)


def test_format_labels_shapes_by_what_varies_and_totals_the_family(fixed_cost):
    estimates = estimate_family(width_family(), progress=False)
    text = format_estimate(estimates)
    lines = text.splitlines()
    assert lines[1].startswith("rule=bp ") and lines[2].startswith("rule=fa ")
    assert lines[-2] == f"total: 4 runs, {4 * 19:.0f} s = {4 * 19 / 3600:.2f} h, one run after another"
    # the peak memory of every shape, and of the largest run, from the meta-device count
    peaks = {e.shape["rule"]: e.memory for e in estimates}
    assert all(m == estimate_memory(RunConfig(**t.config)).total
               for t, m in zip(width_family().tasks(), (e.memory for e in estimates)))  # fmt: skip
    assert lines[0].endswith("peak memory") and lines[-1].startswith(
        f"peak memory: {size_text(max(peaks.values()))}"
    )


def test_cli_estimate_prints_the_total_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    argv = ["run", "width", "--smoke", "--widths", "8", "--rules", "bp", "dfa", "--epochs", "1"]
    assert main([*argv, "--estimate", "--estimate-steps", "1", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "expected run time on cpu" in printed and "total: 2 runs" in printed
    assert not out.exists()


def test_counted_multiply_adds_of_the_papers_conv_nets():
    """SAME padding: ceil(side / stride) positions x width x 9 x input channels, plus the readout."""
    from widealign.sweeps.estimate import macs_per_example

    cifar = RunConfig(dataset="cifar10", width=512).resolved()
    sides = [32, 32, 32, 16, 16, 8, 8]
    expected = sides[0] ** 2 * 512 * 9 * 3 + sum(s * s * 512 * 9 * 512 for s in sides[1:]) + 512 * 10
    assert macs_per_example(cifar) == expected
    kmnist = RunConfig(dataset="kmnist", width=8).resolved()
    assert macs_per_example(kmnist) == 28 * 28 * 8 * 9 + 14 * 14 * 8 * 9 * 8 + 7 * 7 * 8 * 9 * 8 + 8 * 10
    rnn = RunConfig(dataset="add", width=16).resolved()
    assert macs_per_example(rnn) == 100 * 16 * (1 + 16 + 1)


def test_time_classes_and_a_family_class():
    from widealign.sweeps.catalogue import load_family
    from widealign.sweeps.estimate import (
        NOMINAL_MACS_PER_SECOND,
        family_time_classes,
        nominal_macs,
        time_class,
    )

    assert [time_class(s) for s in (10, 3600, 86400 * 3, 86400 * 30, 86400 * 100, 86400 * 400)] == [
        "< 1 hour", "hours", "days", "weeks", "months", "years"
    ]  # fmt: skip
    family = load_family("add")
    total = sum(nominal_macs(t) for t in family.tasks())
    assert family_time_classes(family) == {
        d: time_class(total / r) for d, r in NOMINAL_MACS_PER_SECOND.items()
    }
    (task,) = family.with_overrides({"sweep.rule": ["bp"], "sweep.width": [8]}).tasks()
    per_epoch = (3 * 6 * 50 + 2 * 50 + 6 * 50) * 100 * 8 * (1 + 8 + 1)  # train, held-out, train re-evaluated
    assert nominal_macs(task) == 200 * per_epoch
