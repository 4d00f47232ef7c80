"""metrics.csv beside result.json, and TensorBoard scalars when the tensorboard extra is installed."""

from __future__ import annotations

import csv
import json

import pytest

from widealign.runs import RunConfig, train_run
from widealign.train.metrics import flatten, metrics_table

SMALL = dict(rule="align-ada", width=8, epochs=2, dtype="float64", train_size=200)


def test_flatten_spreads_lists_and_dicts_over_columns():
    record = {"epoch": 1, "score": [0.5, 0.25], "angle": {"a": 1.0}, "deep": [[1]], "acc": None}
    assert flatten(record) == {
        "epoch": 1, "score_0": 0.5, "score_1": 0.25, "angle.a": 1.0, "deep": "[[1]]", "acc": None,
    }  # fmt: skip
    text = metrics_table([{"epoch": 1, "a": 0.1}, {"epoch": 2, "b": 3}])
    assert text == "epoch,a,b\n1,0.1,\n2,,3\n"


def test_a_run_writes_every_epoch_to_metrics_csv_once_also_when_resumed(tmp_path):
    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(RunConfig(**SMALL), tmp_path, progress=False, on_epoch=interrupt)
    assert len(list(csv.DictReader((tmp_path / "metrics.csv").open()))) == 1
    train_run(RunConfig(**SMALL), tmp_path, progress=False)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    epochs = json.loads((tmp_path / "result.json").read_text())["epochs"]
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, epoch in zip(rows, epochs):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds"):
            assert float(row[key]) == epoch[key]  # repr round-trips: the same numbers exactly


def test_tensorboard_scalars_are_the_epochs_numbers(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed here")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train_run(RunConfig(**SMALL), tmp_path / "run", progress=False, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"train_loss", "test_acc", "seconds"} <= set(events.Tags()["scalars"])
    logged = [(s.step, s.value) for s in events.Scalars("test_loss")]
    expected = [(e["epoch"], e["test_loss"]) for e in result["epochs"]]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)  # stored as float32
