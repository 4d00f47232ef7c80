"""The SLURM executor (submitit), run through submitit's local executor: jobs are separate processes
started the way SLURM would start them, so pickling, folders and resumption are what a cluster gets."""

from __future__ import annotations

import json

import pytest

from widealign.sweeps.catalogue import Family, Task
from widealign.sweeps.sweep import run_sweep, slurm_parameters

pytest.importorskip("submitit", reason="submitit is not installed here (optional extra widealign[slurm])")

ONE = Family(
    "tiny", 1, "", "train", {"dataset": "digits", "epochs": 1, "dtype": "float64", "train_size": 100},
    [{"rule": ["fa"], "width": [4]}],
)  # fmt: skip
LOCAL = {"cluster": "local", "timeout_min": 10, "slurm_partition": "ignored-here"}


def finals(results):
    return [(r["run_id"], r["status"], [e["test_loss"] for e in r["epochs"]]) for r in results]


def test_slurm_jobs_give_the_sequential_numbers_and_a_rerun_submits_nothing(tmp_path):
    sequential = run_sweep(ONE, tmp_path / "seq", progress=False)
    via_slurm = run_sweep(ONE, tmp_path / "slurm", executor="slurm", slurm_options=LOCAL, progress=False)
    assert finals(via_slurm) == finals(sequential)
    assert list((tmp_path / "slurm" / "slurm").iterdir())  # submitit's job files and logs
    jobs = sorted((tmp_path / "slurm" / "slurm").iterdir())
    again = run_sweep(ONE, tmp_path / "slurm", executor="slurm", slurm_options=LOCAL, progress=False)
    assert finals(again) == finals(sequential)
    assert sorted((tmp_path / "slurm" / "slurm").iterdir()) == jobs  # ended runs were not submitted
    on_disk = json.loads((tmp_path / "slurm" / via_slurm[0]["run_id"] / "result.json").read_text())
    assert on_disk["status"] == "finished"


def test_slurm_parameters_ask_for_a_gpu_for_cuda_runs_unless_told():
    cpu, gpu = Task("train", {"device": "cpu"}, "a"), Task("train", {"device": "cuda"}, "b")
    assert slurm_parameters([cpu], {}) == {"name": "widealign", "timeout_min": 1440, "cpus_per_task": 1}
    assert slurm_parameters([cpu, gpu], {"slurm_partition": "gpu"})["gpus_per_node"] == 1
    assert slurm_parameters([gpu], {"gpus_per_node": 2, "cluster": "local"}) == {
        "name": "widealign", "timeout_min": 1440, "cpus_per_task": 1, "gpus_per_node": 2,
    }  # fmt: skip


def test_a_bad_slurm_option_fails_before_any_job(tmp_path):
    with pytest.raises(ValueError, match="bad SLURM option"):
        run_sweep(ONE, tmp_path, executor="slurm", slurm_options={"cluster": "local", "nope": 1})
