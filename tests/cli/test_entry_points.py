"""The entry points a user adopting widealign reaches for: --version, their own family file,
run's --lr/--seed/--width/--epochs overrides, --tensorboard, and one-line hints for the rest."""

from __future__ import annotations

import json

import pytest

import widealign
from widealign.cli.main import main

FAMILY = """
name = "mine"
version = 1
description = "bp against align-ada on a little digits"
kind = "train"

[base]
dataset = "digits"
model = "mlp"
epochs = 1
train_size = 100

[[sweep]]
rule = ["bp", "align-ada"]
width = [8, 16]
"""


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("widealign: error:")
    return err


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"widealign {widealign.__version__}\n"


def test_run_takes_a_family_file_of_ones_own(tmp_path, capsys):
    path = tmp_path / "my_family.toml"
    path.write_text(FAMILY)
    assert main(["run", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "4 runs" and lines[0].startswith("rule-bp_width-8_")
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress", "--widths", "8"]) == 0
    assert "2 runs: 2 finished" in capsys.readouterr().out
    results = sorted((tmp_path / "out").glob("*/result.json"))
    assert [json.loads(p.read_text())["config"]["rule"] for p in results] == ["align-ada", "bp"]
    assert all((p.parent / "metrics.csv").exists() for p in results)


@pytest.mark.parametrize(
    "text,message",
    [
        ("name = 'x'\nversion = 1\n", "lacks description"),
        (FAMILY.replace("[base]", "[bsae]"), "unknown key.*bsae"),
        (FAMILY.replace("version = 1", "version = 'one'"), "version must be a positive integer"),
        (FAMILY.replace("train_size = 100", "train_size = 100\nwidht = 3"), "unknown configuration key"),
        (FAMILY.replace('"align-ada"', '"align-adaa"'), "unknown rule 'align-adaa'"),
        ("name = [", "is not valid TOML"),
    ],
)
def test_a_family_file_gets_the_packaged_families_checks(text, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["run", str(path), "--dry-run"]) == 2
    assert __import__("re").search(message, one_line_error(capsys))


def test_a_missing_family_file_is_one_line(capsys):
    assert main(["run", "nowhere/my_family.toml"]) == 2
    assert "no experiment family file 'nowhere/my_family.toml'" in one_line_error(capsys)


def test_run_overrides_lr_seed_width_and_epochs(tmp_path, capsys):
    path = tmp_path / "my_family.toml"
    path.write_text(FAMILY)
    argv = ["run", str(path), "--dry-run", "--lr", "0.5", "2", "--seed", "3", "--width", "4", "--epochs", "2"]
    assert main(argv) == 0
    ids = capsys.readouterr().out.splitlines()[:-1]
    assert len(ids) == 2 * 2 * 1 * 1  # rules x lrs x seeds x widths
    assert {i.rsplit("_", 1)[0] for i in ids} == {
        f"rule-{r}_width-4_lr-{lr}_seed-3" for r in ("bp", "align-ada") for lr in (0.5, 2.0)
    }


def test_other_training_flags_on_run_name_set(capsys):
    assert main(["run", "width", "--smoke", "--batch-size", "50", "--dry-run"]) == 2
    assert "unrecognized arguments: --batch-size 50" in (err := one_line_error(capsys))
    assert "--set key=value" in err
    assert main(["run", "width", "--executor", "sequential", "--slurm", "mem_gb=4"]) == 2
    assert "--slurm goes with --executor slurm" in one_line_error(capsys)


def test_train_writes_tensorboard_scalars(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed here")
    argv = ["train", "--width", "4", "--epochs", "1", "--train-size", "100", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert "metrics.csv" in capsys.readouterr().out
