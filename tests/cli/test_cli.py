"""The widealign command: one-line errors with a non-zero exit, and the real commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from widealign.cli.main import main


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--rule", "nope"], "unknown rule 'nope'"),
        (["train", "--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["train", "--width", "0"], "width must be a positive integer"),
        (["train", "--width", "-3"], "width must be a positive integer"),
        (["compare", "--widths", "8", "0"], "width must be a positive integer"),
        (
            ["train", "--strides", "1", "2", "2", "--width", "8", "8"],
            "2 widths given but the convnet has 3 layers",
        ),
        (["train", "--lr", "abc"], "invalid float value: 'abc'"),
        (["train", "--lr", "-1"], "learning rate must be a positive number"),
        (["train", "--lr", "nan"], "learning rate must be a positive number"),
        (["train", "--out", "/proc/widealign-cannot-write"], "cannot write to output folder"),
        (["compare", "--rules", "bp", "nope"], "unknown rule 'nope'"),
        (["train", "--rule", "bp", "--rule-option", "iterations=5"], "bp has no option 'iterations'"),
        (["train", "--rule", "pal-simplified", "--rule-option", "sigma"], "not of the form name=value"),
        (
            ["train", "--rule", "predictive-coding", "--rule-option", "step=fast"],
            "option step must be a number",
        ),
        (
            ["train", "--rule", "pal-simplified", "--model", "rnn", "--dataset", "add"],
            "pal-simplified supports feed-forward models",
        ),
        (["compare", "--rules", "bp", "fa", "--rule-option", "iterations=5"], "no rule of bp, fa takes"),
        (["bench", "--rules", "nope"], "unknown rule 'nope'"),
        (["train", "--device", "cuda:9"], "CUDA is not available|unknown device"),
        (["frobnicate"], "invalid choice"),
        (
            ["train", "--dataset", "cifar10", "--data-dir", "/nonexistent/widealign"],
            "CIFAR-10 not found in .*--download",
        ),
        (["train", "--holdout", "300"], "holdout applies to mnist, kmnist, cifar10, not digits"),
        (["train", "--dataset", "kmnist", "--holdout", "-2"], "holdout must be a non-negative integer"),
        (["run", "nope"], "unknown experiment family 'nope'"),
        (["train", "--model", "resnet19"], "unknown model 'resnet19'.*torchvision"),
        (["train", "--model", "resnet18", "--dataset", "add"], "resnet18 needs image data"),
        (["run", "width", "--set", "widht=8", "--dry-run"], "unknown configuration key"),
        (["train", "--autocast", "fp16"], "invalid choice: 'fp16'"),
        (["run", "width", "--smoke", "--dry-run", "--set", "autocast=fp16"], "unknown autocast 'fp16'"),
        (["run", "width", "--smoke", "--estimate", "--estimate-steps", "0"], "estimate steps must be"),
        (["run", "width", "--smoke", "--estimate", "--set", "width=0"], "width must be a positive integer"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("widealign: error:")
    assert __import__("re").search(message, err)


def test_train_prints_epochs_and_writes_result(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--rule",
        "align-ada",
        "--width",
        "8",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch   2/2" in printed and "test_acc" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["width"] == 8 and len(result["epochs"]) == 2


def test_train_autocast_reaches_the_recorded_configuration(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--width", "4", "--epochs", "1", "--autocast", "bf16", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["config"]["autocast"] == "bf16"


def test_diverging_train_exits_1_with_one_line(capsys):
    assert main(["train", "--lr", "1e30", "--width", "4", "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and err.count("widealign: error") == 1


def test_compare_and_bench_run(tmp_path, capsys):
    argv = [
        "compare",
        "--rules",
        "bp",
        "fa",
        "--widths",
        "4",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    assert (tmp_path / "compare.png").exists()
    assert (
        main(
            ["bench", "--widths", "4", "--input-shape", "1", "8", "8", "--repeats", "1", "--batch-size", "8"]
        )
        == 0
    )
    assert "x bp" in capsys.readouterr().out


def test_installed_command_exits_non_zero_on_error():
    proc = subprocess.run(
        [sys.executable, "-m", "widealign", "train", "--width", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "widealign: error: width must be a positive integer, got 0"


def test_rules_lists_every_rule_with_one_line(capsys):
    from widealign.rules import RULES

    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if not line.startswith(" ")]
    assert [line.split()[0] for line in lines] == list(RULES)
    assert all(len(line.split()) > 3 for line in lines)
    shown = out.split("\nweight-mirror ")[1].split("\ninformation-alignment ")[0]
    assert "variants: akrout (default), kunin" in shown


def test_train_a_converted_resnet18_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--rule", "kolen-pollack", "--model", "resnet18", "--dataset", "digits", "--epochs", "1",
            "--train-size", "40", "--batch-size", "20", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "resnet18" in capsys.readouterr().out and (out / "result.json").exists()


def test_run_list_shows_run_counts_and_time_classes(capsys):
    from widealign.sweeps.catalogue import family_names, load_family

    assert main(["run", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert set(rows) == set(family_names())
    for name, cells in rows.items():
        family = load_family(name)
        assert int(cells[1]) == len(family.tasks()) and int(cells[2]) == len(family.smoke_version().tasks())
    for line in lines[1:-1]:
        assert line.endswith(f"(reproduces {load_family(line.split()[0]).reproduces})")
    assert rows["low-data"][1:5] == ["735", "18", "years", "days"]
    assert rows["song2021"][3:7] == ["<", "1", "hour", "<"]
