"""Momentum, weight decay and schedules from the command line and from a family file."""

from __future__ import annotations

import json

from widealign.cli.main import main

SMALL = ["--dataset", "digits", "--model", "mlp", "--width", "8", "--train-size", "100", "--no-progress"]


def test_train_takes_the_recipe_and_records_it(tmp_path, capsys):
    argv = ["train", *SMALL, "--epochs", "2", "--lr", "0.5", "--momentum", "0.9", "--weight-decay", "1e-4",
            "--schedule", "step", "--step-size", "1", "--gamma", "0.5", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((tmp_path / "result.json").read_text())
    config = record["config"]
    assert (config["momentum"], config["weight_decay"], config["schedule"]) == (0.9, 1e-4, "step")
    assert (config["step_size"], config["gamma"]) == (1, 0.5)
    assert [e["lr"] for e in record["epochs"]] == [0.5, 0.25]


def test_a_family_sets_the_recipe_and_a_bad_one_is_one_line(tmp_path, capsys):
    family = tmp_path / "mine.toml"
    family.write_text(
        'name = "mine"\nversion = 1\ndescription = "d"\nkind = "train"\n\n[base]\ndataset = "digits"\n'
        'model = "mlp"\nwidth = 8\nepochs = 2\ntrain_size = 100\nschedule = "cosine"\nmomentum = 0.9\n\n'
        "[[sweep]]\nseed = [0, 1]\n"
    )
    assert main(["run", str(family), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*/result.json"))]
    assert len(records) == 2 and all(r["config"]["schedule"] == "cosine" for r in records)
    assert all(r["sessions"][0]["batch_runs"] == 1 for r in records)  # a recipe trains unbatched
    capsys.readouterr()
    assert main(["run", str(family), "--dry-run", "--set", "schedule=step"]) == 2
    assert "schedule step needs step_size" in capsys.readouterr().err
    assert main(["train", *SMALL, "--optimizer", "adam", "--momentum", "0.9"]) == 2
    assert "momentum goes with optimizer sgd" in capsys.readouterr().err
