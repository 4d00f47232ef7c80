"""How many CPU threads widealign may use, from what the operating system actually grants.

PyTorch starts one OpenMP thread per core it sees (``os.cpu_count()``), and those threads wait for
each other at every parallel op. When the process may not run on all of them (a CPU affinity mask,
a container's cgroup quota) or shares them with another busy process, a waiting thread whose
partner is descheduled spins, and a step can take 30 times longer than on a quiet machine. So
widealign sizes its thread pool from the CPUs it may use:

* the affinity mask (``os.sched_getaffinity``, Linux), else ``os.cpu_count()``;
* capped by the cgroup CPU quota (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``), rounded up;
* divided among the workers of a process pool (each worker gets ``cpus // workers``, at least 1).

``--threads N`` on the command line overrides all of it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Where cgroup v2 and v1 publish this process's CPU quota.
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cgroup_quota(v2: Path = CGROUP_V2, v1: tuple[Path, Path] = CGROUP_V1) -> float | None:
    """The cgroup's CPU quota in CPUs (``200000/100000`` -> 2.0), or None where there is none."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = int(v1[0].read_text()), int(v1[1].read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may really use: the affinity mask capped by the cgroup quota."""
    cpus = affinity_cpus()
    quota = cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def threads_per_worker(workers: int = 1, cpus: int | None = None) -> int:
    """Each of ``workers`` processes' share of the usable CPUs (at least one thread)."""
    if workers <= 0:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    return max(1, (usable_cpus() if cpus is None else cpus) // workers)


def set_threads(threads: int | None = None, workers: int = 1) -> int:
    """Size torch's intra-op thread pool: ``threads`` if given, else this worker's share of the CPUs."""
    import torch

    if threads is not None and (not isinstance(threads, int) or threads <= 0):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    n = threads if threads is not None else threads_per_worker(workers)
    torch.set_num_threads(n)
    return n
