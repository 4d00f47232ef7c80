"""Fault injection into sweeps (issue 22): a worker killed, a disk full at every write in turn, a result
file truncated at many lengths. After each fault, nothing finished is lost and every run ends
finished or recorded as failed with the reason; a rerun completes the sweep."""

from __future__ import annotations

import concurrent.futures as cf
import errno
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from widealign import storage
from widealign.storage import WriteError
from widealign.sweeps import sweep as sweep_module
from widealign.sweeps.catalogue import Family
from widealign.sweeps.sweep import run_sweep

TINY = {"dataset": "digits", "model": "mlp", "width": 8, "epochs": 1, "train_size": 100, "dtype": "float64"}
TWO = Family("two", 1, "", "train", TINY, [{"seed": [0, 1]}])


def finals(results):
    return [(r["run_id"], r["status"], [e["test_loss"] for e in r["epochs"]]) for r in results]


def finished_files(out: Path) -> dict[str, bytes]:
    """The result files of the finished runs in ``out``."""
    found = {}
    for path in out.glob("*/result.json"):
        try:
            status = json.loads(path.read_text())["status"]
        except ValueError:  # the damaged file of a test
            continue
        if status == "finished":
            found[path.parent.name] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return finals(run_sweep(TWO, tmp_path_factory.mktemp("ref"), progress=False, batch_runs=1))


def count_writes(tmp_path: Path, monkeypatch) -> int:
    writes = []
    real = storage._open

    def counting(path, mode):
        writes.append(path)
        return real(path, mode)

    monkeypatch.setattr(storage, "_open", counting)
    run_sweep(TWO, tmp_path / "count", progress=False, batch_runs=1)
    monkeypatch.setattr(storage, "_open", real)
    return len(writes)


def test_a_full_disk_at_every_write_in_turn_loses_nothing_finished(tmp_path, monkeypatch, reference):
    """The disk fills at write k (k = 1 .. all the writes of the sweep): the sweep stops with a
    one-line WriteError, the runs finished before it keep their files byte for byte, and a rerun on
    a disk with room gives every run the numbers of an undisturbed sweep."""
    total = count_writes(tmp_path, monkeypatch)
    assert total == 7  # sweep.json, and per run and epoch a checkpoint, result.json and metrics.csv
    real = storage._open
    for k in range(1, total + 1):
        out = tmp_path / f"full{k}"
        seen = []

        def full_at_k(path, mode, seen=seen, k=k):
            seen.append(path)
            if len(seen) == k:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(path, mode)

        monkeypatch.setattr(storage, "_open", full_at_k)
        with pytest.raises(WriteError, match="no space left on device while writing"):
            run_sweep(TWO, out, progress=False, batch_runs=1)
        monkeypatch.setattr(storage, "_open", real)
        kept = finished_files(out)
        assert not list(out.rglob(".*.tmp*")), k  # no temporary file left behind
        rerun = run_sweep(TWO, out, progress=False, batch_runs=1)
        assert finals(rerun) == reference, k
        assert {name: data for name, data in finished_files(out).items() if name in kept} == kept, k
    print(f"disk-full cases tried: {total}")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_a_truncated_result_fails_that_run_with_the_reason_and_the_others_are_kept(
    tmp_path, fraction, reference
):
    out = tmp_path / "out"
    first = run_sweep(TWO, out, progress=False, batch_runs=1)
    victim = out / first[0]["run_id"] / "result.json"
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * fraction)])
    kept = finished_files(out)
    again = run_sweep(TWO, out, progress=False, batch_runs=1)
    assert again[0]["status"] == "failed" and str(victim) in again[0]["error"]
    assert (victim.parent / "error.txt").exists()
    assert again[1]["status"] == "finished" and again[1]["already_complete"]
    assert finished_files(out) == kept
    victim.unlink()  # the remedy the message names: the run is rebuilt from its checkpoint
    assert finals(run_sweep(TWO, out, progress=False, batch_runs=1)) == reference


FOUR = Family(
    "four", 1, "", "train", {**TINY, "width": 128, "epochs": 3, "train_size": 1000},
    [{"seed": [0, 1, 2, 3]}],
)  # fmt: skip


def test_killing_a_pool_worker_restarts_the_pool_and_every_run_finishes(tmp_path):
    out = tmp_path / "out"
    box: dict = {}
    sweep = threading.Thread(
        target=lambda: box.update(results=run_sweep(FOUR, out, "process", workers=2, progress=False)),
        daemon=True,
    )
    sweep.start()
    deadline = time.monotonic() + 240
    while not list(out.glob("*/.lock")) and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = [p for p in multiprocessing.active_children() if p.is_alive()]
    assert workers, "no worker started"
    os.kill(workers[0].pid, signal.SIGKILL)
    sweep.join(timeout=300)
    assert not sweep.is_alive()
    results = box["results"]
    assert [r["status"] for r in results] == ["finished"] * 4, [r.get("error") for r in results]
    assert [len(r["epochs"]) for r in results] == [3] * 4
    again = run_sweep(FOUR, out, progress=False)
    assert all(r.get("already_complete") for r in again)


class _BrokenForOne(cf.ThreadPoolExecutor):
    """A pool whose worker 'dies' whenever it runs the unit holding ``victim`` (every time)."""

    victim = ""
    starts = 0

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        type(self).starts += 1

    def submit(self, fn, units, *args):
        if any(t.run_id == self.victim for t in units):
            future: cf.Future = cf.Future()
            future.set_exception(cf.process.BrokenProcessPool("a worker died"))
            return future
        return super().submit(fn, units, *args)


def test_a_run_whose_worker_dies_twice_is_recorded_failed_and_the_rest_finish(tmp_path, monkeypatch):
    _BrokenForOne.victim = TWO.tasks()[0].run_id
    monkeypatch.setattr(sweep_module, "worker_pool", _BrokenForOne)
    results = run_sweep(TWO, tmp_path, "process", workers=2, progress=False, batch_runs=1)
    assert results[0]["status"] == "failed"
    assert results[0]["error"] == (
        "its worker process died twice (killed, or out of memory); rerun the sweep to retry it"
    )
    assert results[1]["status"] == "finished"
    assert _BrokenForOne.starts == 2  # the pool was started again once, for the retry
