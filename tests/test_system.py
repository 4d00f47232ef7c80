"""Thread counts from the CPUs the process may use: affinity, cgroup quota, workers' shares."""

from __future__ import annotations

import os

import pytest
import torch

from widealign import system
from widealign.cli.main import main


def test_cgroup_v2_quota_is_read_in_cpus(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert system.cgroup_quota(v2, (tmp_path / "no", tmp_path / "no")) == 1.5
    v2.write_text("max 100000\n")
    assert system.cgroup_quota(v2, (tmp_path / "no", tmp_path / "no")) is None


def test_cgroup_v1_quota_is_read_when_v2_is_absent(tmp_path):
    quota, period = tmp_path / "q", tmp_path / "p"
    quota.write_text("50000\n")
    period.write_text("100000\n")
    assert system.cgroup_quota(tmp_path / "absent", (quota, period)) == 0.5
    quota.write_text("-1\n")
    assert system.cgroup_quota(tmp_path / "absent", (quota, period)) is None


def test_usable_cpus_is_the_affinity_mask_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(system, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(system, "cgroup_quota", lambda: 2.5)
    assert system.usable_cpus() == 3
    monkeypatch.setattr(system, "cgroup_quota", lambda: None)
    assert system.usable_cpus() == 8


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity masks on this OS")
def test_affinity_mask_is_what_the_os_reports():
    assert system.affinity_cpus() == len(os.sched_getaffinity(0))


def test_workers_share_the_cpus():
    assert system.threads_per_worker(1, cpus=8) == 8
    assert system.threads_per_worker(3, cpus=8) == 2
    assert system.threads_per_worker(16, cpus=8) == 1
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        system.threads_per_worker(0, cpus=8)


def test_set_threads_sizes_torchs_pool_and_an_explicit_count_wins(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(system, "usable_cpus", lambda: 1)
        assert system.set_threads() == 1 and torch.get_num_threads() == 1
        assert system.set_threads(2) == 2 and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            system.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_cli_threads_flag_sets_the_pool(capsys):
    before = torch.get_num_threads()
    try:
        assert main(["rules"]) == 0
        assert main(["bench", "--threads", "1", "--widths", "2", "--rules", "bp", "--repeats", "1",
                     "--input-shape", "1", "4", "4", "--batch-size", "4"]) == 0  # fmt: skip
        assert torch.get_num_threads() == 1
        assert main(["bench", "--threads", "0", "--widths", "2"]) == 2
        assert "threads must be a positive integer" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def _wait_policy(code: str, env: dict[str, str]) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_widealign_first_makes_waiting_openmp_threads_sleep():
    import os

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _wait_policy(f"import widealign; {show}", env) == "PASSIVE"
    assert _wait_policy(f"import widealign; {show}", env | {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _wait_policy(f"import torch, widealign; {show}", env) == "None"
