"""Run a sweep's tasks with an executor: in-process, a local process pool, Ray, or SLURM.

Every task runs into its own folder ``OUT/<run_id>/`` through its kind's runner, which writes
``result.json`` atomically and checkpoints every epoch; so rerunning a sweep skips finished runs,
resumes interrupted ones, and a killed sweep loses at most the epoch in progress. A run that
diverges is recorded as diverged; a run that fails (an exception) is reported, written to
``OUT/<run_id>/error.txt`` and retried by the next rerun; the sweep goes on either way.
``OUT/sweep.json`` lists the family, its version and every run (so ``widealign report
--latest-sweep`` can keep to them); runs already in ``OUT`` that the sweep does not include are left
as they are, and :func:`other_runs` names them. Every run is checked before the first starts (for
local executors also its device and whether its parameters fit in memory), and the sweep holds the
lock of ``OUT`` while it runs (:func:`widealign.storage.run_lock`), as each run holds its folder's.

Executors:

* ``sequential`` (default): one run after another in this process, with a progress bar per run.
* ``process``: a local pool of ``workers`` processes (spawned), each with ``cores / workers`` threads.
  Workers exit when the sweep's process dies (even by ``kill -9``): on Linux the kernel signals
  them (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread checks their parent every second.
  A worker that dies (killed, out of memory) breaks the pool: the pool is started again and the
  runs it was working on are retried once (they resume from their checkpoints); a run lost twice
  is recorded as failed with the reason, and the sweep goes on with the rest.
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
  local processes through submitit's local executor instead (to try a sweep out, and in the tests);
  without it, a machine where SLURM's ``sbatch`` is not found is refused before any run (submitit
  would otherwise run the jobs here and report success).
  Needs the optional extra: ``pip install -e '.[slurm]'``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from widealign.runs.config import RunConfig
from widealign.runs.identity import run_identity
from widealign.runs.run import (
    RESULT_FILE,
    SWEEP_FILE,
    TENSORBOARD_ENV,
    batch_key,
    check_writable,
    environment,
    read_result,
    train_batched,
    write_json_atomic,
)  # fmt: skip
from widealign.storage import WriteError, run_lock, write_text_atomic
from widealign.sweeps.batching import auto_batch_key
from widealign.sweeps.catalogue import MAX_RUNS, Family, Task
from widealign.sweeps.estimate import check_sweep_memory
from widealign.sweeps.runners import RUNNERS, check_here, validate
from widealign.system import threads_per_worker, usable_cpus

EXECUTORS = ("sequential", "process", "ray", "slurm")
#: Runs that differ only in seed (or seed and learning rate) train up to this many at a time as
#: one batched run with the local executors, where batching pays (``--batch-runs K`` forces K,
#: 1 turns it off).
DEFAULT_BATCH_RUNS = 8
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def run_task(task: Task, out: str, progress: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Run one task into ``out/<run_id>``; never raises for a failing run (returns status failed)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    folder = Path(out) / task.run_id
    try:
        result = RUNNERS[task.kind](task.config, folder, progress)
        (folder / "error.txt").unlink(missing_ok=True)
    except WriteError:  # a full disk fails every run after it too: stop the sweep
        raise
    except Exception as err:  # a failing run must not stop the sweep
        write_text_atomic(traceback.format_exc(), folder / "error.txt")
        result = {"status": "failed", "config": task.config, "error": f"{type(err).__name__}: {err}"}
    result["run_id"] = task.run_id
    return result


def run_group(
    tasks: Sequence[Task], out: str, progress: bool = False, threads: int | None = None
) -> list[dict[str, Any]]:
    """Run tasks that share a batch key as one batched run (:func:`~widealign.runs.run.train_batched`);
    one task alone runs as :func:`run_task` does. Never raises for failing runs."""
    if len(tasks) == 1:
        return [run_task(tasks[0], out, progress, threads)]
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    folders = [Path(out) / t.run_id for t in tasks]
    board = os.environ.get(TENSORBOARD_ENV)
    boards = [os.path.join(board, f.name) if board else None for f in folders]
    try:
        results = train_batched([RunConfig(**t.config) for t in tasks], folders, progress, boards)
        for folder in folders:
            (folder / "error.txt").unlink(missing_ok=True)
    except WriteError:
        raise
    except Exception as err:  # a failing batch must not stop the sweep: every member is reported
        text = traceback.format_exc()
        results = []
        for task, folder in zip(tasks, folders):
            write_text_atomic(text, folder / "error.txt")
            results.append(
                {"status": "failed", "config": task.config, "error": f"{type(err).__name__}: {err}"}
            )
    for task, result in zip(tasks, results):
        result["run_id"] = task.run_id
    return results


def _batch_key(task: Task, auto: bool, sizes: dict[str, Any], measure: bool = True) -> str | None:
    """The task's batch key, or None where it runs alone; with ``auto``, only where batching pays
    (:func:`~widealign.sweeps.batching.auto_batch_key`, cached in ``sizes`` by key)."""
    if task.kind != "train":
        return None
    try:
        cfg = RunConfig(**task.config)
        key = batch_key(cfg)
        if auto and cfg.dtype != "float64":  # float32 batched runs are opt-in (module docstring)
            return None
        if key is not None and auto:
            key = auto_batch_key(cfg, key, sizes, measure)
        return key
    except (TypeError, ValueError):  # an invalid configuration runs (and fails) on its own
        return None


def batch_groups(tasks: Sequence[Task], size: int | None = None, measure: bool = True) -> list[list[Task]]:
    """The tasks as units of work: training runs that share a :func:`batch_key` in groups of up to
    ``size`` (in the order they first appear), every other task alone. ``size`` 1 batches nothing;
    None (auto) batches, in groups of up to :data:`DEFAULT_BATCH_RUNS`, the runs for which a short
    measurement here finds batching faster (:func:`~widealign.sweeps.batching.batching_pays`): on
    the CPU it pays only where per-operation overhead dominates a step
    (docs/performance.md#batched-runs). ``measure=False`` (dry runs) skips the measurement and
    groups every run the measured table does not rule out."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"batch_runs must be a positive integer, got {size!r}")
    auto = size is None
    size = DEFAULT_BATCH_RUNS if size is None else size
    groups: dict[str, list[list[Task]]] = {}
    units: list[list[Task]] = []
    sizes: dict[str, Any] = {}
    for task in tasks:
        key = _batch_key(task, auto, sizes, measure) if size > 1 else None
        if key is None:
            units.append([task])
            continue
        open_groups = groups.setdefault(key, [])
        if not open_groups or len(open_groups[-1]) == size:
            open_groups.append([])
            units.append(open_groups[-1])
        open_groups[-1].append(task)
    return units


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
    batch_runs: int | None = None,
    max_runs: int | None = MAX_RUNS,
) -> list[dict[str, Any]]:
    """Run every task of ``family`` into ``out``; returns their result records in task order.

    ``threads`` is each process-pool worker's torch thread count (default: its share of the CPUs
    this process may use, :func:`widealign.system.threads_per_worker`); Ray runs get one each.
    With the sequential and process executors, training runs that differ only in seed (or seed
    and learning rate) train ``batch_runs`` at a time as one batched run
    (:func:`~widealign.runs.run.train_batched`); 1 trains every run on its own, None
    batches where it pays (:func:`batch_groups`).
    """
    if executor == "slurm":
        check_slurm(slurm_options or {})
    tasks = checked_tasks(family, executor, workers, gpus_per_run, max_runs)
    units = batch_groups(tasks, batch_runs if executor in ("sequential", "process") else 1)
    out = check_writable(out)
    with run_lock(out):
        return _run_locked(
            family, tasks, out, executor, workers, ray_address, progress, gpus_per_run, threads,
            slurm_options, units,
        )  # fmt: skip


def checked_tasks(
    family: Family,
    executor: str = "sequential",
    workers: int | None = None,
    gpus_per_run: float = 1.0,
    max_runs: int | None = MAX_RUNS,
) -> list[Task]:
    """The family's tasks, every one checked for ``executor`` before any starts (ValueError if not).

    Each configuration is validated; with a local executor (sequential, process) also its device
    and whether its parameters fit in memory here; with Ray the resources it asks for (SLURM jobs
    are checked on their nodes).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    tasks = family.tasks(max_runs)
    if not tasks:
        raise ValueError(f"family {family.name!r} has no runs (a swept list is empty)")
    for task in tasks:
        validate(task)
        if executor == "ray":
            ray_resources(task, gpus_per_run)
        elif executor != "slurm":  # cluster nodes have their own devices and memory
            check_here(task)
    if executor in ("sequential", "process"):
        check_sweep_memory(tasks, 1 if executor == "sequential" else workers or usable_cpus())
    return tasks


def _run_locked(
    family: Family,
    tasks: list[Task],
    out: Path,
    executor: str,
    workers: int | None,
    ray_address: str | None,
    progress: bool,
    gpus_per_run: float,
    threads: int | None,
    slurm_options: dict[str, Any] | None = None,
    units: list[list[Task]] | None = None,
) -> list[dict[str, Any]]:
    units = units if units is not None else [[t] for t in tasks]
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
        out / SWEEP_FILE,
    )
    if executor == "sequential":
        results = _sequential(units, out, progress)
    elif executor == "process":
        results = _process_pool(units, out, workers, progress, threads)
    elif executor == "slurm":
        results = _slurm(tasks, out, progress, dict(slurm_options or {}))
    else:
        results = _ray(tasks, out, ray_address, progress, gpus_per_run)
    by_id = {r["run_id"]: r for r in results}
    return [by_id[t.run_id] for t in tasks]


def other_runs(out: str | os.PathLike, tasks: Sequence[Task]) -> list[str]:
    """Run folders under ``out`` (holding a result.json) that are not among ``tasks``, sorted."""
    root = Path(out)
    if not root.is_dir():
        return []
    ours = {t.run_id for t in tasks}
    found = {f.parent.relative_to(root).as_posix() for f in root.rglob(RESULT_FILE)}
    return sorted(found - ours - {"."})


def environment_summary() -> dict[str, Any]:
    import torch

    return {k: v for k, v in environment(torch.device("cpu")).items() if k != "device"}


def _bar(total: int, progress: bool) -> tqdm:
    return tqdm(total=total, desc="sweep", unit="run", disable=not progress, position=0)


def _sequential(units: Sequence[Sequence[Task]], out: Path, progress: bool) -> list[dict[str, Any]]:
    results = []
    with _bar(sum(map(len, units)), progress) as bar:
        for unit in units:
            results.extend(run_group(unit, str(out), progress))
            bar.update(len(unit))
    return results


def _process_pool(
    units: Sequence[Sequence[Task]],
    out: Path,
    workers: int | None,
    progress: bool,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    cores = usable_cpus()
    workers = workers or cores
    threads = threads or threads_per_worker(workers, cores)
    results: list[dict[str, Any]] = []
    todo, tries = [list(u) for u in units], [0] * len(units)
    with _bar(sum(map(len, units)), progress) as bar:
        while todo:
            lost: list[list[Task]] = []
            with worker_pool(workers) as pool:
                futures = {pool.submit(run_group, u, str(out), False, threads): k for k, u in enumerate(todo)}
                for future in cf.as_completed(futures):
                    try:
                        done = future.result()
                    except cf.process.BrokenProcessPool:  # a worker died: retry its runs once
                        lost.append(todo[futures[future]])
                        continue
                    results.extend(done)
                    bar.update(len(done))
            todo = []
            for unit in lost:
                if _retried(unit, tries, units):
                    done = [_lost_result(t) for t in unit]
                    results.extend(done)
                    bar.update(len(done))
                else:
                    todo.append(unit)
    return results


def _retried(unit: list[Task], tries: list[int], units: Sequence[Sequence[Task]]) -> bool:
    """Count a lost try of ``unit``; whether it had been tried again already (then it fails)."""
    k = next(i for i, u in enumerate(units) if list(u) == unit)
    tries[k] += 1
    return tries[k] > 1


def _lost_result(task: Task) -> dict[str, Any]:
    """The record of a run whose worker process died twice (killed, or out of memory)."""
    return {
        "status": "failed",
        "config": task.config,
        "error": "its worker process died twice (killed, or out of memory); rerun the sweep to retry it",
        "run_id": task.run_id,
    }


def worker_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that exit when this process dies."""
    ctx = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
    )


def die_with_parent(parent: int, interval: float = 1.0, kernel: bool = True) -> None:
    """Make this process exit when process ``parent`` (its parent) dies.

    On Linux (and ``kernel``) the kernel sends SIGKILL when the parent dies
    (``prctl(PR_SET_PDEATHSIG)``); a daemon thread that compares ``os.getppid()`` with ``parent``
    every ``interval`` seconds covers other systems. A parent that died before this ran is noticed
    at once.
    """
    if kernel and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True, name="watch-parent").start()


def _watch_parent(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


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


def check_slurm(options: dict[str, Any]) -> None:
    """Refuse ``--executor slurm`` where SLURM is not installed, unless ``cluster`` names one.

    submitit's AutoExecutor falls back to running the jobs as local processes when it finds no
    SLURM, which would report a cluster sweep as done here; ``cluster=local`` asks for that.
    """
    if options.get("cluster") is None and shutil.which("sbatch") is None:
        raise ValueError(
            "--executor slurm: SLURM's sbatch is not found on this machine; run the sweep where SLURM "
            "is installed, or use --executor sequential or process (or --slurm cluster=local to run "
            "the jobs here through submitit)"
        )


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
    """``"n runs: a finished, b diverged, c failed"`` with the failures' messages.

    Runs that had ended before this sweep started (returned, not rerun) are counted at the end:
    ``"(k were already complete; nothing rerun)"``.
    """
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    line = f"{len(results)} runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    done = sum(bool(r.get("already_complete")) for r in results)
    if done:
        line += f" ({done} were already complete; nothing rerun)"
    failures = [f"  {r['run_id']}: {r['error']}" for r in results if r["status"] == "failed"]
    return "\n".join([line, *failures])
