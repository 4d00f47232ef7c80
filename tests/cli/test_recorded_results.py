"""Issue 22 through the command line and the sweep: no wrong result recorded, no traceback, and a
one-line message naming the value and what is allowed (exit 2) wherever nothing ran."""

from __future__ import annotations

import json
import pathlib
import pickle
import re
import shutil

import pytest
import torch

from conftest import copy_of, one_line_error, snapshot
from widealign import storage
from widealign.cli.main import main
from widealign.runs.config import RunConfig
from widealign.runs.run import train_run
from widealign.sweeps import sweep as sweep_module
from widealign.sweeps.catalogue import NAME_MAX, Family
from widealign.sweeps.sweep import batch_groups, run_sweep

BASE = ["--model", "mlp", "--width", "8", "--epochs", "1", "--train-size", "100", "--no-progress"]
TINY = {"dataset": "digits", "model": "mlp", "width": 8, "epochs": 1, "train_size": 100}


def train(out, *extra: str) -> int:
    return main(["train", *BASE, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train(out) == 0
    return out


class _Stop(BaseException):
    pass


def interrupted(out: pathlib.Path) -> pathlib.Path:
    """A two-epoch run stopped after its first epoch (result "running", checkpoint at epoch 1)."""

    def stop(record) -> None:
        raise _Stop

    cfg = RunConfig(**TINY | {"epochs": 2})
    with pytest.raises(_Stop):
        train_run(cfg, out, progress=False, on_epoch=stop)
    assert json.loads((out / "result.json").read_text())["status"] == "running"
    return out


def family_file(tmp_path: pathlib.Path, text: str, name: str = "fam.toml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


FAMILY = """name = "tiny"
version = 1
description = "two seeds"
[base]
dataset = "digits"
model = "mlp"
width = 8
epochs = 1
train_size = 100
[[sweep]]
seed = [0, 1]
"""


# 1. --executor slurm without SLURM is refused, not run here and reported as done.


def test_slurm_without_sbatch_is_refused_before_any_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep_module.shutil, "which", lambda name: None)
    out = tmp_path / "out"
    assert main(["run", str(family_file(tmp_path, FAMILY)), "--executor", "slurm", "--out", str(out)]) == 2
    message = one_line_error(capsys)
    assert message.startswith("--executor slurm: SLURM's sbatch is not found on this machine;")
    assert "--slurm cluster=local" in message
    assert not out.exists()
    with pytest.raises(ValueError, match="sbatch is not found"):
        run_sweep(Family("f", 1, "", "train", TINY, [{"seed": [0]}]), out, executor="slurm")
    assert not out.exists()


# 2. A checkpoint with NaN weights is a one-line error naming it; nothing is recorded.


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_checkpoint_with_non_finite_weights_is_refused_and_nothing_recorded(
    finished, tmp_path, capsys, bad
):
    run = copy_of(finished, tmp_path)
    (run / "result.json").unlink()
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name].view(-1)[3] = bad
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(run)
    capsys.readouterr()
    assert train(run) == 2
    assert one_line_error(capsys) == (
        f"{run}/checkpoint.pt holds non-finite weights (NaN or infinity in {name}); delete it to start the "
        "run again"
    )
    assert snapshot(run) == before
    other = copy_of(finished, tmp_path, "other")
    shutil.copy(finished / "result.json", run / "result.json")
    capsys.readouterr()
    assert main(["align", str(other), str(run), "--draws", "2"]) == 2
    assert "holds non-finite weights" in one_line_error(capsys)


# 3. A result edited by hand (or beside another checkpoint) is refused on resume.


def test_a_running_result_edited_to_finished_is_refused(tmp_path, capsys):
    run = interrupted(tmp_path / "run")
    record = json.loads((run / "result.json").read_text())
    record["status"] = "finished"
    (run / "result.json").write_text(json.dumps(record))
    before = snapshot(run)
    capsys.readouterr()
    assert train(run, "--epochs", "2") == 2
    assert one_line_error(capsys) == (
        f"{run}/result.json was changed after widealign wrote it (its digest does not match); delete it to "
        "rebuild it from the checkpoint (or to run again)"
    )
    assert snapshot(run) == before
    (run / "result.json").unlink()  # the remedy: the checkpoint's epoch is kept, the run completes
    assert train(run, "--epochs", "2") == 0
    assert "resumed from epoch 1" in capsys.readouterr().out


def test_a_result_beside_another_checkpoint_or_an_inconsistent_older_one_is_refused(
    finished, tmp_path, capsys
):
    run = copy_of(finished, tmp_path)
    other = interrupted(tmp_path / "other")
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    capsys.readouterr()
    assert train(run) == 2
    assert one_line_error(capsys).startswith(
        f"{run}/result.json does not belong to {run}/checkpoint.pt (another checkpoint's digest);"
    )
    # A record from before digests is trusted where it is consistent, and refused where it is not.
    run = copy_of(finished, tmp_path, "old")
    record = json.loads((run / "result.json").read_text())
    del record["digest"], record["checkpoint_sha256"]
    (run / "result.json").write_text(json.dumps(record))
    assert train(run) == 0
    assert "already holds this run" in capsys.readouterr().out
    old = interrupted(tmp_path / "old-running")
    record = json.loads((old / "result.json").read_text())
    del record["digest"], record["checkpoint_sha256"]
    record["status"] = "finished"
    (old / "result.json").write_text(json.dumps(record))
    assert train(old, "--epochs", "2") == 2
    assert one_line_error(capsys) == (
        f"{old}/result.json says finished after 1 of its 2 epochs and carries no digest (edited by hand?); "
        "delete it to rebuild it from the checkpoint (or to run again)"
    )


# 4 and 5. Every session's grouping is in the run's own record; float32 batching is opt-in.

SEEDS = Family(
    "seeds", 1, "", "train",
    {**TINY, "dtype": "float64", "epochs": 2, "rule": "align-zero", "width": 4},
    [{"seed": [0, 1, 2, 3]}],
)  # fmt: skip


def test_a_sweep_resumed_with_another_grouping_records_each_session(tmp_path, monkeypatch):
    from widealign.runs import run as run_module

    original = run_module._Run.save

    def save_then_stop(self, epoch_record=None):
        original(self, epoch_record)
        if epoch_record is not None and epoch_record.epoch == 1 and self.record["sessions"]:
            stops.append(self.out.name)
            if len(stops) == 3:  # the first group of three has saved its first epoch
                raise _Stop

    stops: list[str] = []
    monkeypatch.setattr(run_module._Run, "save", save_then_stop)
    with pytest.raises(_Stop):
        run_sweep(SEEDS, tmp_path, progress=False, batch_runs=3)
    monkeypatch.setattr(run_module._Run, "save", original)
    results = run_sweep(SEEDS, tmp_path, progress=False, batch_runs=2)
    ids = [t.run_id for t in SEEDS.tasks()]
    assert [r["status"] for r in results] == ["finished"] * 4
    on_disk = {i: json.loads((tmp_path / i / "result.json").read_text()) for i in ids}
    assert on_disk[ids[0]]["sessions"] == [
        {"first_epoch": 1, "batch_runs": 3, "batched_with": [ids[1], ids[2]], "float32_batched": False,
         "last_epoch": 1},
        {"first_epoch": 2, "batch_runs": 2, "batched_with": [ids[1]], "float32_batched": False,
         "last_epoch": 2},
    ]  # fmt: skip
    # the third run resumed alone (its new partner had not started), the fourth ran alone throughout
    assert [s["batch_runs"] for s in on_disk[ids[2]]["sessions"]] == [3, 1]
    assert on_disk[ids[3]]["sessions"] == [{"first_epoch": 1, "batch_runs": 1, "last_epoch": 2}]


def test_automatic_batching_leaves_float32_runs_alone_and_records_opted_in_float32_batches(tmp_path):
    f32 = Family("f32", 1, "", "train", {**TINY, "dataset": "add", "model": "rnn", "width": 16},
                 [{"seed": list(range(4))}])  # fmt: skip
    f64 = f32.with_overrides({"dtype": "float64"})
    assert [len(u) for u in batch_groups(f32.tasks())] == [1, 1, 1, 1]  # auto: float32 never batched
    assert [len(u) for u in batch_groups(f64.tasks())] == [4]
    assert [len(u) for u in batch_groups(f32.tasks(), 2)] == [2, 2]  # asked for: batched
    small = Family("s", 1, "", "train", TINY, [{"seed": [0, 1]}])
    results = run_sweep(small, tmp_path, progress=False, batch_runs=2)
    for result, other in zip(results, reversed(results)):
        assert result["sessions"] == [
            {"first_epoch": 1, "batch_runs": 2, "batched_with": [other["run_id"]], "float32_batched": True,
             "last_epoch": 1}
        ]  # fmt: skip


# 6. A killed worker: covered in tests/sweeps/test_faults.py.


# 7. Deeply nested JSON: one line naming the file; report skips it and goes on.


@pytest.mark.parametrize(
    "text", ["[" * 200_000 + "]" * 200_000, '{"config": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"],
    ids=["list", "inside-config"],
)  # fmt: skip
def test_a_deeply_nested_result_is_one_line_in_train_align_and_report(finished, tmp_path, capsys, text):
    run = copy_of(finished, tmp_path)
    good = copy_of(finished, tmp_path, "good")
    (run / "result.json").write_text(text)
    capsys.readouterr()
    assert train(run) == 2
    assert re.fullmatch(
        rf"{re.escape(str(run))}/result\.json is not a result record \(nested \d+ deep; at most 32 allowed\)",
        one_line_error(capsys),
    )
    assert main(["align", str(good), str(run), "--draws", "2"]) == 2
    assert "is not a result record (nested" in one_line_error(capsys)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert f"unreadable: run: {run}/result.json is not a result record (nested" in out
    assert out.startswith("2 runs (1 finished, 1 unreadable)")


# 8. A huge grid is counted, not expanded, and refused above the limit (--max-runs raises it).


def test_a_grid_of_a_hundred_million_runs_is_refused_at_once(tmp_path, capsys):
    values = ", ".join(map(str, range(1, 101)))
    text = FAMILY.replace("seed = [0, 1]", f"seed = [{values}]\nwidth = [{values}]\nlr = [{values}]\n"
                          f"batch_size = [{values}]")  # fmt: skip
    path = family_file(tmp_path, text)
    assert main(["run", str(path), "--dry-run"]) == 2
    assert one_line_error(capsys) == (
        "family 'tiny' describes 100,000,000 runs (seed 100 x width 100 x lr 100 x batch_size 100); at "
        "most 100,000 are allowed (raise the limit with --max-runs N)"
    )
    small = family_file(tmp_path, FAMILY.replace("[0, 1]", "[0, 1, 2]"), "small.toml")
    assert main(["run", str(small), "--dry-run", "--max-runs", "2"]) == 2
    assert "describes 3 runs (seed 3); at most 2 are allowed" in one_line_error(capsys)
    assert main(["run", str(small), "--dry-run", "--max-runs", "3"]) == 0
    assert capsys.readouterr().out.endswith("3 runs\n")
    assert main(["run", str(small), "--dry-run", "--max-runs", "0"]) == 2
    assert one_line_error(capsys) == "--max-runs must be a positive integer, got 0"


# 9. Names are checked before the first run.


@pytest.mark.parametrize(
    "name", ["..", ".", "a\\\\b", "x:y", "a" * 300], ids=["dotdot", "dot", "bs", "colon", "long"]
)
def test_a_family_name_that_is_not_a_folder_name_is_refused(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    path = family_file(tmp_path, FAMILY.replace('name = "tiny"', f'name = "{name}"'))
    before = sorted(tmp_path.iterdir())
    assert main(["run", str(path)]) == 2
    assert one_line_error(capsys).startswith(f"{path}: name must be a folder name (letters, digits,")
    assert sorted(tmp_path.iterdir()) == before


def test_run_names_too_long_or_unsafe_for_a_file_system_are_shortened_and_the_sweep_runs(tmp_path):
    note = "n:" * 200
    family = Family("f", 1, "", "train", TINY, [{"extra": [{"note": note}, {"note": note + "x"}]}])
    tasks = family.tasks()
    assert len({t.run_id for t in tasks}) == 2
    for task in tasks:
        assert len(task.run_id.encode()) <= NAME_MAX and not re.search(r'[<>:"/\\|?*\s]', task.run_id)
    results = run_sweep(family, tmp_path, progress=False)
    assert [r["status"] for r in results] == ["finished", "finished"]


# 10. A crafted pickle is code widealign will not run, whatever torch's wording; never the unsafe flag.


@pytest.mark.parametrize("wording", ["Unsupported global: GLOBAL os.system", "unsupported GLOBAL os.system"])
def test_a_crafted_pickle_is_code_that_will_not_run_in_any_wording(tmp_path, monkeypatch, wording):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"x")

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will "
            "likely "
            f"succeed, but it can result in arbitrary code execution. WeightsUnpickler error: {wording} was "
            "not an allowed global by default. Check the documentation of torch.load"
        )

    monkeypatch.setattr(storage.torch, "load", refuse)
    with pytest.raises(ValueError) as caught:
        storage.load_checkpoint(path)
    assert str(caught.value) == (
        f"{path} holds code that widealign will not run (Python objects other than tensors and plain "
        "values); refusing to open it; delete it to start the run again"
    )


def test_a_real_crafted_pickle_never_suggests_the_unsafe_flag(tmp_path):
    class Code:
        def __reduce__(self):
            return (print, ("ran",))

    for protocol in (0, 2):
        path = tmp_path / f"p{protocol}.pt"
        torch.save({"format": 2, "x": Code()}, path, pickle_protocol=protocol)
        with pytest.raises(ValueError) as caught:
            storage.load_checkpoint(path)
        assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
        assert str(caught.value).startswith(f"{path} ")


# 11. Messages that name the value and what is allowed.


def test_report_names_a_folder_it_cannot_list(finished, tmp_path, capsys, monkeypatch):
    copy_of(finished, tmp_path, "good")
    (tmp_path / "locked").mkdir()
    real = storage.os.scandir

    def scandir(path):
        if pathlib.Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("os.scandir", scandir)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"unreadable: locked: cannot list {tmp_path}/locked: Permission denied" in out
    assert out.startswith("2 runs (1 finished, 1 unreadable)")


def test_a_family_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "fam.toml"
    path.write_bytes(FAMILY.replace("two seeds", "caf\xe9").encode("latin-1"))
    assert main(["run", str(path), "--dry-run"]) == 2
    message = one_line_error(capsys)
    assert re.fullmatch(
        rf"{re.escape(str(path))} is not a UTF-8 text file \(byte 0xe9 at position \d+\); save it as UTF-8",
        message,
    ), message


@pytest.mark.parametrize("command", ["train", "report", "run"])
def test_out_pointing_at_a_file_is_one_line(finished, tmp_path, capsys, command):
    target = tmp_path / "a-file"
    target.write_text("mine")
    argv = {
        "train": ["train", *BASE, "--out", str(target)],
        "report": ["report", str(finished), "--out", str(target)],
        "run": ["run", str(family_file(tmp_path, FAMILY)), "--out", str(target), "--no-progress"],
    }[command]
    assert main(argv) == 2
    assert (
        one_line_error(capsys) == f"output folder {str(target)!r} is a file; give a folder (new or existing)"
    )
    assert target.read_text() == "mine"


def test_a_train_size_above_the_data_names_both(tmp_path, capsys):
    assert main(["train", *BASE[:-3], "--train-size", "100000", "--no-progress"]) == 2
    assert one_line_error(capsys) == (
        "train size 100000 is more than the 1437 training examples of digits; choose at most 1437"
    )


def test_a_missing_checkpoint_beside_a_running_result_is_one_line(tmp_path, capsys):
    run = interrupted(tmp_path / "run")
    (run / "checkpoint.pt").unlink()
    before = snapshot(run)
    capsys.readouterr()
    assert train(run, "--epochs", "2") == 2
    assert one_line_error(capsys) == (
        f"{run}/result.json records 1 trained epoch(s) but {run}/checkpoint.pt is missing, so the run "
        "cannot resume; delete result.json to start it again"
    )
    assert snapshot(run) == before


def test_an_empty_sweep_is_an_error(tmp_path, capsys):
    path = family_file(tmp_path, FAMILY.replace("seed = [0, 1]", "seed = []"))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys) == "family 'tiny' has no runs (a swept list is empty); nothing to do"
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="has no runs"):
        run_sweep(Family("tiny", 1, "", "train", TINY, [{"seed": []}]), tmp_path / "out")


@pytest.mark.parametrize("eps", ["-1", "nan", "inf", "0"])
def test_a_bad_eps_is_refused_for_every_model(tmp_path, capsys, eps):
    assert main(["train", *BASE, "--eps", eps]) == 2
    assert one_line_error(capsys) == (
        f"eps (the normalisation epsilon) must be a positive number, got {float(eps)!r}"
    )
