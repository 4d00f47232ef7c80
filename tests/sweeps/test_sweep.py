"""Sweeps: resumable, killable, the same numbers from every executor, failures and divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from widealign.sweeps.catalogue import Family, Task, family_names, load_family
from widealign.sweeps.sweep import batch_groups, ray_resources, run_sweep, summarise

TINY = Family(
    "tiny", 1, "two rules, two widths", "train",
    {"dataset": "digits", "epochs": 2, "dtype": "float64", "train_size": 200},
    [{"rule": ["bp", "fa"], "width": [4, 8]}],
)  # fmt: skip


def finals(results):
    return [(r["run_id"], r["status"], [e["test_loss"] for e in r["epochs"]]) for r in results]


def test_sweep_runs_every_task_and_a_rerun_trains_nothing(tmp_path):
    first = run_sweep(TINY, tmp_path, progress=False)
    assert [r["status"] for r in first] == ["finished"] * 4
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["family"] == "tiny" and len(manifest["runs"]) == 4
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")}
    again = run_sweep(TINY, tmp_path, progress=False)
    assert finals(again) == finals(first)
    assert summarise(again) == "4 runs: 4 finished (4 were already complete; nothing rerun)"
    assert summarise(first) == "4 runs: 4 finished"
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")} == stamps


def test_process_pool_gives_the_sequential_numbers(tmp_path):
    sequential = run_sweep(TINY, tmp_path / "seq", progress=False)
    pooled = run_sweep(TINY, tmp_path / "pool", executor="process", workers=2, progress=False)
    assert finals(pooled) == finals(sequential)


def test_ray_executor_gives_the_sequential_numbers(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed here (optional extra widealign[ray])")
    one = Family(TINY.name, 1, "", "train", TINY.base, [{"rule": ["bp", "fa"], "width": [4]}])
    sequential = run_sweep(one, tmp_path / "seq", progress=False)
    via_ray = run_sweep(one, tmp_path / "ray", executor="ray", progress=False)
    assert finals(via_ray) == finals(sequential)


def test_ray_runs_ask_for_a_gpu_only_when_they_run_on_cuda(tmp_path):
    def task(device: str) -> Task:
        return Task("train", {"device": device}, "x")

    assert ray_resources(task("cpu")) == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources(Task("train", {}, "x"), 0.5) == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources(task("cuda")) == {"num_cpus": 1, "num_gpus": 1.0}
    assert ray_resources(task("cuda"), 0.25) == {"num_cpus": 1, "num_gpus": 0.25}
    assert ray_resources(task("cuda"), 2) == {"num_cpus": 1, "num_gpus": 2}
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="GPUs per run"):
            ray_resources(task("cuda"), bad)
    gpu_one = TINY.with_overrides({"device": "cuda:1"})
    with pytest.raises(ValueError, match="not 'cuda:1'"):
        run_sweep(gpu_one, tmp_path, executor="ray", progress=False)  # refused before any run starts
    assert not list(tmp_path.iterdir())


def test_diverged_and_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    family = Family(
        "mixed", 1, "", "train", {"dataset": "digits", "epochs": 2, "width": 4, "train_size": 100},
        [{"lr": [1e30, 1.0]}, {"lr": 1.0, "strides": [[1, 2]], "width": [[4, 4, 4]]}],
    )  # fmt: skip
    with pytest.raises(ValueError, match="3 widths given"):
        run_sweep(family, tmp_path, progress=False)  # invalid configurations fail before any run
    good = Family("mixed", 1, "", "train", family.base, [{"lr": [1e30, 1.0]}])
    results = run_sweep(good, tmp_path, progress=False)
    assert [r["status"] for r in results] == ["diverged", "finished"]
    assert "1 diverged, 1 finished" in summarise(results)


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_killed_sweep_reruns_to_completion_without_duplicates_or_losses(tmp_path):
    out = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "widealign", "run", "width", "--smoke", "--out", str(out), "--no-progress",
        "--rules", "bp", "fa", "--widths", "8", "--set", "epochs=40", "--set", "train_size=300",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def states() -> list[str]:
        return [json.loads(p.read_text())["status"] for p in out.rglob("result.json")]

    try:
        # kill once the first run has finished and the second has checkpointed an epoch
        assert wait_for(lambda: sorted(states()) == ["finished", "running"], timeout=240)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = [p for p in out.rglob("result.json") if json.loads(p.read_text())["status"] == "finished"]
    before = {p: p.read_text() for p in finished}
    partial = next(p for p in out.rglob("result.json") if p not in before)
    done_epochs = len(json.loads(partial.read_text())["epochs"])

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 finished" in rerun.stdout
    results = list(out.rglob("result.json"))
    assert len(results) == 2 == len([d for d in out.iterdir() if d.is_dir()])
    assert all(p.read_text() == text for p, text in before.items())  # the finished run was not redone
    resumed = json.loads(partial.read_text())
    assert resumed["status"] == "finished" and resumed["resumed_from_epoch"] >= done_epochs
    assert [e["epoch"] for e in resumed["epochs"]] == list(range(1, 41))


def test_every_smoke_family_runs_its_first_task(tmp_path, monkeypatch):
    monkeypatch.setenv("WIDEALIGN_DATA_DIR", str(tmp_path / "data"))  # imagenet-smoke writes its images
    for name in family_names():
        short = {"steps": 50} if name == "song2021" else {"epochs": 1}
        family = load_family(name).smoke_version().with_overrides(short)
        first = Family(family.name, 1, "", family.kind, family.tasks()[0].config, [])
        [result] = run_sweep(first, tmp_path / name, progress=False)
        assert result["status"] == "finished", (name, result.get("error"))
        assert Path(tmp_path / name / result["run_id"] / "result.json").exists()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting to be reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


POOL_PARENT = """
import os, time
from widealign.sweeps.sweep import worker_pool
pool = worker_pool(1)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 300)
time.sleep(300)
"""


def test_pool_workers_exit_when_the_sweep_process_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", POOL_PARENT], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert alive(worker)
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not alive(worker), timeout=60)


WATCHED = """
import os, sys, time
from widealign.sweeps.sweep import die_with_parent
die_with_parent(int(sys.argv[1]), interval=0.1, kernel=False)  # no prctl: only the watchdog is left
open(sys.argv[2], "w").close()
time.sleep(300)
"""
STARTER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]])
print(child.pid, flush=True)
time.sleep(300)
"""


def test_the_watchdog_alone_ends_a_worker_whose_parent_is_gone(tmp_path):
    marker = tmp_path / "watching"
    gone = subprocess.run([sys.executable, "-c", WATCHED, "1", str(marker)], capture_output=True, timeout=300)
    assert (
        gone.returncode == 1 and gone.stderr == b"" and not marker.exists()
    )  # its parent is not process 1: it exits at once
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTER, WATCHED, str(marker)], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        assert wait_for(marker.exists, timeout=300)  # imports are slow on a busy machine
        assert alive(child)
    finally:
        parent.kill()
        parent.wait()
    assert wait_for(lambda: not alive(child), timeout=30)


def test_a_sweep_rerun_with_other_overrides_names_the_runs_it_leaves(tmp_path, capsys):
    from widealign.cli.main import main

    out = tmp_path / "sweep"
    base = ["run", "width", "--smoke", "--out", str(out), "--no-progress", "--rules", "bp"]
    small = ["--set", "epochs=1", "--set", "train_size=100"]
    assert main([*base, "--widths", "4", *small]) == 0
    [old] = [p.parent.name for p in out.rglob("result.json")]
    capsys.readouterr()
    assert main([*base, "--widths", "8", *small]) == 0
    printed = capsys.readouterr().out
    assert (
        f"note: {out} also holds 1 run not part of this sweep, left as they are ({old}); "
        f"'widealign report {out} --latest-sweep' reports this sweep's runs only"
    ) in printed
    assert main(["report", str(out), "--out", str(tmp_path / "all")]) == 0
    assert "2 runs (2 finished)" in capsys.readouterr().out
    assert main(["report", str(out), "--latest-sweep", "--out", str(tmp_path / "latest")]) == 0
    assert "1 runs (1 finished)" in capsys.readouterr().out
    table = (tmp_path / "latest" / "results.csv").read_text()
    assert old not in table and "width-8" in table


HOLD = """
import sys, time
from widealign.storage import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_sweep_into_a_folder_in_use_is_refused_before_any_run(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"{tmp_path} is in use by process {holder.pid} "):
            run_sweep(TINY, tmp_path, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # the killed holder's, now stale


SEEDS = Family(
    "seeds-lr", 1, "one rule and width over seeds and learning rates", "train",
    {"dataset": "digits", "epochs": 2, "dtype": "float64", "train_size": 200, "rule": "align-zero",
     "width": 4},
    [{"seed": [0, 1, 2], "lr": [0.5, 1.0]}],
)  # fmt: skip


def test_runs_that_differ_in_seed_and_lr_train_batched_with_their_separate_numbers(tmp_path):
    batched = run_sweep(SEEDS, tmp_path / "batched", progress=False)
    separate = run_sweep(SEEDS, tmp_path / "separate", progress=False, batch_runs=1)
    assert [r.get("batch_runs") for r in batched] == [6] * 6
    assert all("batch_runs" not in r for r in separate)
    for a, b in zip(batched, separate, strict=True):
        assert a["run_id"] == b["run_id"] and a["status"] == b["status"] == "finished"
        for ea, eb in zip(a["epochs"], b["epochs"], strict=True):
            for key in ("train_loss", "test_loss", "test_acc"):
                assert ea[key] == pytest.approx(eb[key], rel=1e-9)
        assert (tmp_path / "batched" / a["run_id"] / "checkpoint.pt").exists()
    # Groups of at most K, and a rerun trains nothing.
    assert summarise(run_sweep(SEEDS, tmp_path / "batched", progress=False, batch_runs=4)).endswith(
        "nothing rerun)"
    )
    fours = run_sweep(SEEDS, tmp_path / "fours", progress=False, batch_runs=4)
    assert sorted(r["batch_runs"] for r in fours) == [2, 2, 4, 4, 4, 4]


def test_auto_batching_groups_only_runs_whose_steps_are_overhead_bound():
    small = Family(
        "rnn",
        1,
        "",
        "train",
        {"dataset": "add", "width": 16, "dtype": "float64"},
        [{"seed": list(range(10))}],
    )
    big = Family(
        "conv", 1, "", "train", {"dataset": "kmnist", "width": 64, "dtype": "float64"}, [{"seed": [0, 1]}]
    )
    assert [len(u) for u in batch_groups(small.tasks())] == [8, 2]
    assert [len(u) for u in batch_groups(big.tasks())] == [1, 1]
    assert [len(u) for u in batch_groups(big.tasks(), 2)] == [2]
    assert [len(u) for u in batch_groups(small.tasks(), 1)] == [1] * 10
    lr = Family("x", 1, "", "train", {"dataset": "add", "rule": "kolen-pollack"}, [{"lr": [0.1, 0.2]}])
    assert [len(u) for u in batch_groups(lr.tasks(), 4)] == [2]  # B is in the optimiser: lr per member
    adam = Family(
        "y",
        1,
        "",
        "train",
        {"dataset": "add", "rule": "kolen-pollack", "optimizer": "adam"},
        [{"lr": [0.1, 0.2]}],
    )
    assert [len(u) for u in batch_groups(adam.tasks(), 4)] == [1, 1]  # batched Adam shares one lr
    with pytest.raises(ValueError, match="batch_runs must be a positive integer"):
        batch_groups(small.tasks(), 0)
