"""Run a sweep's tasks with an executor: in-process, a local process pool, Ray, or SLURM.

Every task runs into its own folder ``OUT/<run_id>/`` through its kind's runner, which writes
``result.json`` atomically and checkpoints every epoch; so rerunning a sweep skips finished runs,
resumes interrupted ones, and a killed sweep loses at most the epoch in progress. A run that
diverges is recorded as diverged; a run that fails (an exception) is reported, written to
``OUT/<run_id>/error.txt`` and retried by the next rerun; the sweep goes on either way.
``OUT/sweep.json`` lists the family, its version and every run.

Executors:

* ``sequential`` (default): one run after another in this process, with a progress bar per run.
* ``process``: a local pool of ``workers`` processes (spawned), each with ``cores / workers`` threads.
* ``ray``: tasks on a Ray cluster (``ray_address``, e.g. ``auto`` or ``ray://host:10001``) or on a
  local Ray instance started for the sweep. The results folder must be on a file system that every
  node sees. Each run asks Ray for one CPU and, if its device is ``cuda``, for ``gpus_per_run`` GPUs
  (default 1; a fraction such as 0.25 lets small runs share a GPU). Ray hides the GPUs from tasks
  that did not ask for one and numbers the ones it gives from 0, so runs on Ray name ``cuda``, not
  ``cuda:N``. Needs the optional extra: ``pip install -e '.[ray]'`` in a source checkout.
* ``slurm``: one SLURM job per run (submitted as one job array) through submitit; the results
  folder must be on a file system the nodes see, and submitit's logs go to ``OUT/slurm/``. Runs
  that already ended are not submitted again. ``slurm_options`` are submitit's executor parameters
  (``timeout_min``, ``cpus_per_task``, ``mem_gb``, ``gpus_per_node``, ``slurm_partition``,
  ``slurm_account``, ``slurm_array_parallelism``, any ``slurm_*`` key); runs on ``cuda`` ask for one
  GPU each unless ``gpus_per_node`` says otherwise. The option ``cluster="local"`` runs the jobs as
  local processes through submitit's local executor instead (to try a sweep out, and in the tests).
  Needs the optional extra: ``pip install -e '.[slurm]'``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from widealign.experiments.catalogue import Family, Task, run_identity
from widealign.experiments.run import check_writable, environment, read_result, write_json_atomic
from widealign.experiments.runners import RUNNERS, validate
from widealign.system import threads_per_worker, usable_cpus

EXECUTORS = ("sequential", "process", "ray", "slurm")


def run_task(task: Task, out: str, progress: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Run one task into ``out/<run_id>``; never raises for a failing run (returns status failed)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    folder = Path(out) / task.run_id
    try:
        result = RUNNERS[task.kind](task.config, folder, progress)
        (folder / "error.txt").unlink(missing_ok=True)
    except Exception as err:  # a failing run must not stop the sweep
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
        result = {"status": "failed", "config": task.config, "error": f"{type(err).__name__}: {err}"}
    result["run_id"] = task.run_id
    return result


def run_sweep(
    family: Family,
    out: str | os.PathLike,
    executor: str = "sequential",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    gpus_per_run: float = 1.0,
    threads: int | None = None,
    slurm_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every task of ``family`` into ``out``; returns their result records in task order.

    ``threads`` is each process-pool worker's torch thread count (default: its share of the CPUs
    this process may use, :func:`widealign.system.threads_per_worker`); Ray runs get one each.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    tasks = family.tasks()
    for task in tasks:
        validate(task)
        if executor == "ray":
            ray_resources(task, gpus_per_run)
    out = check_writable(out)
    write_json_atomic(
        {
            "family": family.name,
            "version": family.version,
            "description": family.description,
            "base": family.base,
            "sweeps": family.sweeps,
            "runs": [{"run_id": t.run_id, "kind": t.kind, "config": t.config} for t in tasks],
            **environment_summary(),
        },
        out / "sweep.json",
    )
    if executor == "sequential":
        results = _sequential(tasks, out, progress)
    elif executor == "process":
        results = _process_pool(tasks, out, workers, progress, threads)
    elif executor == "slurm":
        results = _slurm(tasks, out, progress, dict(slurm_options or {}))
    else:
        results = _ray(tasks, out, ray_address, progress, gpus_per_run)
    by_id = {r["run_id"]: r for r in results}
    return [by_id[t.run_id] for t in tasks]


def environment_summary() -> dict[str, Any]:
    import torch

    return {k: v for k, v in environment(torch.device("cpu")).items() if k != "device"}


def _bar(total: int, progress: bool) -> tqdm:
    return tqdm(total=total, desc="sweep", unit="run", disable=not progress, position=0)


def _sequential(tasks: Sequence[Task], out: Path, progress: bool) -> list[dict[str, Any]]:
    results = []
    with _bar(len(tasks), progress) as bar:
        for task in tasks:
            results.append(run_task(task, str(out), progress))
            bar.update()
    return results


def _process_pool(
    tasks: Sequence[Task], out: Path, workers: int | None, progress: bool, threads: int | None = None
) -> list[dict[str, Any]]:
    cores = usable_cpus()
    workers = workers or cores
    if workers <= 0:
        raise ValueError(f"workers must be positive, got {workers}")
    threads = threads or threads_per_worker(workers, cores)
    ctx = multiprocessing.get_context("spawn")
    results = []
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool, _bar(len(tasks), progress) as bar:
        futures = [pool.submit(run_task, t, str(out), False, threads) for t in tasks]
        for future in cf.as_completed(futures):
            results.append(future.result())
            bar.update()
    return results


def ray_resources(task: Task, gpus_per_run: float = 1.0) -> dict[str, float]:
    """What one run asks Ray for: a CPU, and ``gpus_per_run`` GPUs if it runs on ``cuda``."""
    device = str(task.config.get("device", "cpu"))
    if device.startswith("cuda:"):
        raise ValueError(f"on Ray, runs name device 'cuda' (Ray assigns the GPU), not {device!r}")
    if not 0 < gpus_per_run <= 1 and not (gpus_per_run > 1 and float(gpus_per_run).is_integer()):
        raise ValueError(f"GPUs per run must be a fraction in (0, 1] or a whole number, got {gpus_per_run}")
    return {"num_cpus": 1, "num_gpus": gpus_per_run if device == "cuda" else 0}


def _ray(
    tasks: Sequence[Task], out: Path, address: str | None, progress: bool, gpus_per_run: float
) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError as err:
        raise ValueError(
            "--executor ray needs Ray: pip install -e '.[ray]' in the widealign checkout (or pip install ray)"
        ) from err
    env = {k: v for k, v in os.environ.items() if k.startswith("WIDEALIGN_")}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    remote, folder = ray.remote(run_task), str(out.resolve())
    pending = [remote.options(**ray_resources(t, gpus_per_run)).remote(t, folder, False, 1) for t in tasks]
    results = []
    try:
        with _bar(len(tasks), progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results.extend(ray.get(done))
                bar.update(len(done))
    finally:
        if started_here:
            ray.shutdown()
    return results


def ended_result(task: Task, out: Path) -> dict[str, Any] | None:
    """The finished or diverged result of ``task`` already in ``out``, if any (nothing to run)."""
    result = read_result(out / task.run_id)
    if result is None or result.get("status") not in ("finished", "diverged"):
        return None
    recorded = run_identity(result["config"])  # resolved: the task's values plus the defaults
    wanted = run_identity(json.loads(json.dumps(task.config)))
    if any(recorded.get(key, object()) != value for key, value in wanted.items()):
        return None  # let the runner decide (and report a clash)
    return result | {"run_id": task.run_id}


def slurm_parameters(tasks: Sequence[Task], options: dict[str, Any]) -> dict[str, Any]:
    """submitit parameters for the sweep's jobs: ``options``, plus a GPU per run on ``cuda``."""
    params = {"name": "widealign", "timeout_min": 24 * 60, "cpus_per_task": 1, **options}
    params.pop("cluster", None)
    if "gpus_per_node" not in options and any(str(t.config.get("device", "cpu")) != "cpu" for t in tasks):
        params["gpus_per_node"] = 1
    return params


def _slurm(tasks: Sequence[Task], out: Path, progress: bool, options: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        import submitit
    except ImportError as err:
        raise ValueError(
            "--executor slurm needs submitit: pip install -e '.[slurm]' in the widealign checkout "
            "(or pip install submitit)"
        ) from err
    results = [r for r in (ended_result(t, out) for t in tasks) if r is not None]
    todo = [t for t in tasks if t.run_id not in {r["run_id"] for r in results}]
    if not todo:
        return results
    cluster = options.get("cluster")
    executor = submitit.AutoExecutor(folder=out.resolve() / "slurm", cluster=cluster)
    params = slurm_parameters(todo, options)
    try:
        executor.update_parameters(**params)
    except (TypeError, ValueError, NameError) as err:
        raise ValueError(f"bad SLURM option: {err}") from err
    folder, threads = str(out.resolve()), int(params.get("cpus_per_task", 1))
    with executor.batch():
        jobs = [executor.submit(run_task, t, folder, False, threads) for t in todo]
    with _bar(len(tasks), progress) as bar:
        bar.update(len(results))
        for task, job in zip(todo, jobs):
            try:
                results.append(job.result())
            except Exception as err:  # the job itself failed (timeout, node failure): retried next rerun
                message = f"SLURM job {job.job_id} failed: {type(err).__name__}: {err}"
                results.append(
                    {"status": "failed", "config": task.config, "error": message, "run_id": task.run_id}
                )
            bar.update()
    return results


def summarise(results: Sequence[dict[str, Any]]) -> str:
    """``"n runs: a finished, b diverged, c failed"`` with the failures' messages."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    line = f"{len(results)} runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    failures = [f"  {r['run_id']}: {r['error']}" for r in results if r["status"] == "failed"]
    return "\n".join([line, *failures])
