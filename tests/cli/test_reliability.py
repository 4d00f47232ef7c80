"""Issue 11 through the command line: never a result under the wrong settings, no code run from a
file, one line (exit 2) for every damaged file and bad input, messages that say what happened."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

from conftest import copy_of, one_line_error, snapshot
from widealign.cli.main import main

BASE = ["--model", "mlp", "--width", "8", "--epochs", "1", "--no-progress"]


def train(out, *extra: str) -> int:
    return main(["train", *BASE, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    """A finished one-epoch run folder (copy it before changing anything)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train(out) == 0
    return out


# Item 1: the checkpoint carries its configuration and a resume checks it field by field.


def test_a_checkpoint_without_its_result_is_not_resumed_under_other_settings(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "result.json").unlink()
    before = snapshot(run)
    capsys.readouterr()
    assert train(run, "--epochs", "3", "--lr", "1") == 2
    assert one_line_error(capsys) == (
        f"{run}/checkpoint.pt was trained with other settings (lr: 5.0 there, 1.0 here; epochs: 1 there, "
        "3 here); rerun with the same settings or choose another output folder"
    )
    assert snapshot(run) == before


def test_a_checkpoint_without_its_result_resumes_under_the_same_settings(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "result.json").unlink()
    capsys.readouterr()
    assert train(run) == 0
    assert "resumed from epoch 1" in capsys.readouterr().out
    resumed, original = (json.loads((f / "result.json").read_text()) for f in (run, finished))
    assert resumed["config"] == original["config"] and resumed["epochs"] == original["epochs"]


def test_a_result_with_other_settings_names_the_fields(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    capsys.readouterr()
    assert train(run, "--seed", "3") == 2
    assert one_line_error(capsys) == (
        f"{run} holds a run with a different configuration (seed: 0 there, 3 here); choose another "
        "output folder"
    )


# Item 2: checkpoints are opened with weights_only=True; a crafted pickle is refused.


class _Touch:
    """Unpickling this creates a file: what a crafted checkpoint could do."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def craft(path: pathlib.Path, marker: pathlib.Path) -> None:
    torch.save({"format": 2, "config": {}, "payload": _Touch(marker)}, path)


def test_a_crafted_checkpoint_is_refused_by_train_without_running_it(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "result.json").unlink()
    marker = tmp_path / "pwned"
    craft(run / "checkpoint.pt", marker)
    torch.load(run / "checkpoint.pt", weights_only=False)  # the file does run code when unpickled
    assert marker.exists()
    marker.unlink()
    capsys.readouterr()
    assert train(run) == 2
    assert one_line_error(capsys) == (
        f"{run}/checkpoint.pt holds code that widealign will not run (Python objects other than tensors "
        "and plain values); refusing to open it; delete it to start the run again"
    )
    assert not marker.exists()


def test_a_crafted_checkpoint_is_refused_by_align(finished, tmp_path, capsys):
    a, b = copy_of(finished, tmp_path, "a"), copy_of(finished, tmp_path, "b")
    marker = tmp_path / "pwned"
    craft(b / "checkpoint.pt", marker)
    capsys.readouterr()
    assert main(["align", str(a), str(b), "--draws", "2"]) == 2
    assert "refusing to open it" in one_line_error(capsys)
    assert not marker.exists()


# Item 4: damaged files give one line naming the file, exit 2, and are left as they were.


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage,problem",
    [
        (lambda p: p.write_bytes(b""), "is damaged"),
        (lambda p: p.write_bytes(b"\x00garbage, not a checkpoint" * 10), "is damaged"),
        (_truncate, "is damaged"),
    ],
    ids=["empty", "garbage", "truncated"],
)
def test_a_damaged_checkpoint_is_one_line(finished, tmp_path, capsys, damage, problem):
    run = copy_of(finished, tmp_path)
    (run / "result.json").unlink()
    damage(run / "checkpoint.pt")
    before = snapshot(run)
    capsys.readouterr()
    assert train(run) == 2
    message = one_line_error(capsys)
    assert message.startswith(f"{run}/checkpoint.pt {problem} (") and message.endswith(
        "delete it to start the run again"
    )
    assert snapshot(run) == before


@pytest.mark.parametrize("other", [["--width", "4"], ["--rule", "fa"]], ids=["width", "rule"])
def test_a_checkpoint_from_another_width_or_rule_is_one_line(finished, tmp_path, capsys, other):
    theirs = tmp_path / "theirs"
    assert train(theirs, *other) == 0
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(theirs / "checkpoint.pt", run / "checkpoint.pt")
    before = snapshot(run)
    capsys.readouterr()
    assert train(run) == 2
    field = {"--width": "width: 4 there, 8 here", "--rule": 'rule: "fa" there, "bp" here'}[other[0]]
    assert one_line_error(capsys) == (
        f"{run}/checkpoint.pt was trained with other settings ({field}); rerun with the same settings or "
        "choose another output folder"
    )
    assert snapshot(run) == before


def test_a_checkpoint_whose_tensors_do_not_fit_is_one_line(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "result.json").unlink()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3)
    torch.save(state, run / "checkpoint.pt")
    capsys.readouterr()
    assert train(run) == 2
    message = one_line_error(capsys)
    assert message.startswith(f"{run}/checkpoint.pt does not fit this run (") and "size mismatch" in message


@pytest.mark.parametrize(
    "text,problem",
    [
        ("{}", "('config' is missing or not a dict)"),
        ("[]", "(it holds [], not an object)"),
        ("NaN", "(it holds NaN, not an object)"),
        ("", "(not valid JSON: Expecting value: line 1 column 1 (char 0))"),
        (
            '{"config": {}, "status": "finished", "epochs": [',
            "(not valid JSON: Expecting value: line 1 column",
        ),
    ],
    ids=["empty-object", "list", "nan", "empty", "truncated"],
)
def test_a_damaged_result_is_one_line(finished, tmp_path, capsys, text, problem):
    run = copy_of(finished, tmp_path)
    (run / "result.json").write_text(text)
    before = snapshot(run)
    capsys.readouterr()
    assert train(run) == 2
    assert one_line_error(capsys).startswith(f"{run}/result.json is not a result record {problem}")
    assert snapshot(run) == before


# Item 3: two processes on one folder.

HOLD = """
import sys, time
from widealign.storage import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_process_on_a_folder_in_use_exits_2_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train(run) == 2
        assert one_line_error(capsys) == (
            f"{run} is in use by process {holder.pid} (lock file {run}/.lock); wait for it to finish or "
            "choose another output folder"
        )
        assert not (run / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert train(run) == 0  # the holder died: its lock file is stale and taken over
    assert not (run / ".lock").exists()


def test_two_runs_started_at_once_on_one_folder_one_refused(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "widealign", "train", *BASE, "--epochs", "2", "--out", str(run)]
    procs = [subprocess.Popen([*cmd, "--lr", lr], stderr=subprocess.PIPE, text=True) for lr in ("1", "2")]
    codes = [p.wait(timeout=300) for p in procs]
    errors = [p.stderr.read() for p in procs]
    assert sorted(codes) == [0, 2], errors
    loser = errors[codes.index(2)].strip()
    assert re.fullmatch(
        rf"widealign: error: ({re.escape(str(run))} is in use by process \d+ .*|"
        rf"{re.escape(str(run))} holds a run with a different configuration \(lr: .*)",
        loser,
    ), loser
    lr = json.loads((run / "result.json").read_text())["config"]["lr"]
    assert lr == [1.0, 2.0][codes.index(0)]


# Item 8: bad input caught before any work, in one line.


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["train", "--model", "mlp", "--width", "10000000", "--no-progress"],
            r"width 10000000 does not fit in memory: its [\d,]+ parameters and their gradients need "
            r"[\d.]+ TB \(float32\) but cpu has [\d.]+ [KMGT]B; choose a smaller width",
        ),
        (["train", "--device", "mps"], r"unknown device 'mps' \(use cpu, cuda, cuda:N or auto\)"),
        (["train", "--device", "meta"], r"unknown device 'meta' \(use cpu, cuda, cuda:N or auto\)"),
        (
            ["train", "--dataset", "add", "--model", "mlp"],
            r"data set 'add' is a sequence task \(inputs of shape \(100, 1\)\) that needs the rnn model, "
            r"not 'mlp'; use --model rnn",
        ),
        (
            ["train", "--dataset", "digits", "--model", "rnn"],
            r"data set 'digits' holds images \(1, 8, 8\), which need the convnet or the mlp, not 'rnn'; "
            r"use --model convnet or mlp",
        ),
        (
            ["train", "--dataset", "add", "--loss", "ce"],
            r"loss 'ce' needs class labels but 'add' is a regression task; use one of mse, "
            r"sequence-mse, half-sse",
        ),
        (
            ["bench", "--input-shape", "8", "8"],
            r"--input-shape for the convnet is C H W \(3 numbers\), got \[8, 8\]",
        ),
        (["bench", "--input-shape", "1", "0", "8"], r"--input-shape must be positive, got \[1, 0, 8\]"),
        (["bench", "--batch-size", "0"], r"batch size must be a positive integer, got 0"),
        (["bench", "--repeats", "0"], r"repeats must be a positive integer, got 0"),
        (["run", "width", "--smoke", "--workers", "0"], r"workers must be a positive integer, got 0"),
        (["train", "--out", ""], r"--out needs a path, got an empty string"),
        (["run", "width", "--smoke", "--out", ""], r"--out needs a path, got an empty string"),
        (["report", "results", "--out", " "], r"--out needs a path, got an empty string"),
        (["bench", "--json", ""], r"--json needs a path, got an empty string"),
        (["train", "--seed", "-1"], r"seed must be a non-negative integer \(0, 1, 2, ...\), got -1"),
        (["align", "a", "--seed", "-2"], r"seed must be a non-negative integer \(0, 1, 2, ...\), got -2"),
        (
            ["run", "width", "--smoke", "--set", "seed=-1"],
            r"seed must be a non-negative integer \(0, 1, 2, ...\), got -1",
        ),
        (
            ["run", "width", "--smoke", "--device", "nonsense"],
            r"unknown device 'nonsense' \(use cpu, cuda, cuda:N or auto\)",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert re.fullmatch(message, one_line_error(capsys))
    assert capsys.readouterr().out == ""
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


def test_a_sweep_on_a_device_that_is_not_here_stops_before_the_first_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["run", "width", "--smoke", "--device", "cuda", "--out", str(tmp_path / "s")]) == 2
    assert "CUDA is not available" in one_line_error(capsys)
    assert not (tmp_path / "s").exists()


# Item 9: messages that say what happened.


def test_rerunning_a_finished_run_says_so_and_writes_nothing(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    time.sleep(0.01)
    capsys.readouterr()
    assert train(run) == 0
    out = capsys.readouterr().out
    assert f"{run} already holds this run (finished after 1 epoch); nothing written" in out
    assert "resumed" not in out and "wrote" not in out
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before


def test_aligning_a_run_with_itself_warns(finished, capsys):
    assert main(["align", str(finished), str(finished) + os.sep, "--draws", "2", "--noise-batch", "4"]) == 0
    err = capsys.readouterr().err
    assert err == f"widealign: warning: {finished} is given twice; this compares the run with itself\n"


def test_a_checkpoint_from_before_configurations_were_recorded_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": 1, "model": {}, "history": []}, run / "checkpoint.pt")
    assert train(run) == 2
    assert one_line_error(capsys) == (
        f"{run}/checkpoint.pt does not record the configuration it was trained with (checkpoint format 1, "
        "from an older widealign); delete it to start the run again"
    )
