"""``widealign run``: a family of the catalogue (or the user's TOML file), listed, estimated or swept."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from widealign.cli.common import UsageError, add_threads, data_location
from widealign.cli.names import index

if TYPE_CHECKING:
    from widealign.sweeps.catalogue import Family, Task


def add_parser(sub: argparse._SubParsersAction) -> None:
    names = index()
    max_runs, batch_runs = names["defaults"]["max_runs"], names["defaults"]["batch_runs"]
    run = sub.add_parser("run", help="run an experiment family of the paper (see --list)")
    run.add_argument("name", nargs="?", help="family name (widealign run --list) or your own FILE.toml")
    run.add_argument(
        "--list", action="store_true",
        help="list the families: run counts (full, smoke) and the full version's expected CPU/GPU time class",
    )  # fmt: skip
    run.add_argument("--smoke", action="store_true", help="the quick version on bundled data")
    run.add_argument("--out", help="results folder (default results/<name>[-smoke])")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable")
    run.add_argument("--epochs", type=int, help="same as --set epochs=N")
    run.add_argument("--dataset", help="same as --set dataset=NAME")
    run.add_argument("--widths", "--width", type=int, nargs="+", help="same as --set 'sweep.width=[...]'")
    run.add_argument("--rules", "--rule", nargs="+", help="same as --set 'sweep.rule=[...]'")
    run.add_argument("--lr", type=float, nargs="+", help="same as --set 'sweep.lr=[...]'")
    run.add_argument("--seeds", "--seed", type=int, nargs="+", help="same as --set 'sweep.seed=[...]'")
    run.add_argument("--device", help="same as --set device=NAME")
    run.add_argument("--compile", action="store_true", help="same as --set compile=true (torch.compile)")
    run.add_argument("--executor", choices=names["executors"], default="sequential")
    run.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE",
        help="with --executor slurm: a submitit parameter (timeout_min=600, slurm_partition=gpu, "
        "gpus_per_node=1, mem_gb=16, ...; cluster=local runs the jobs here), repeatable",
    )  # fmt: skip
    run.add_argument("--tensorboard", metavar="DIR", help="TensorBoard scalars of each run in DIR/<run>")
    run.add_argument(
        "--batch-runs", type=int, metavar="K",
        help="train K runs that differ only in seed (or seed and lr) as one batched model (sequential "
        f"and process executors; default: up to {batch_runs} where it pays, small runs such as "
        "the Add task's; 1 turns it off)",
    )  # fmt: skip
    run.add_argument(
        "--max-runs", type=int, default=max_runs, metavar="N",
        help=f"refuse a family that expands into more than N runs (default {max_runs:,})",
    )  # fmt: skip
    run.add_argument("--workers", type=int, help="processes for --executor process (default: cores)")
    run.add_argument("--ray-address", help="Ray cluster to join (default: start a local Ray)")
    run.add_argument(
        "--gpus-per-run", type=float, default=1.0,
        help="with --executor ray and --device cuda: GPUs each run asks for (default 1; 0.25 shares a GPU)",
    )  # fmt: skip
    run.add_argument("--data-dir", help="where data sets live (sets WIDEALIGN_DATA_DIR)")
    run.add_argument("--download", action="store_true", help="download missing data sets")
    run.add_argument("--dry-run", action="store_true", help="list the runs without training")
    run.add_argument(
        "--estimate", action="store_true",
        help="time a few steps of each distinct run shape here and print the family's expected run time",
    )  # fmt: skip
    run.add_argument("--estimate-steps", type=int, default=3, help="timed steps per run shape (default 3)")
    run.add_argument("--no-progress", action="store_true")
    add_threads(run)


def _family(args: argparse.Namespace) -> Family:
    from widealign.sweeps.catalogue import load_family, parse_override

    family = load_family(args.name)
    if args.smoke:
        family = family.smoke_version()
    overrides = dict(parse_override(text) for text in args.set)
    for key, value in (("epochs", args.epochs), ("dataset", args.dataset), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    if args.compile:
        overrides["compile"] = True
    swept = (
        ("sweep.width", args.widths),
        ("sweep.rule", args.rules),
        ("sweep.lr", args.lr),
        ("sweep.seed", args.seeds),
    )
    for key, values in swept:
        if values is not None:
            overrides[key] = values
    return family.with_overrides(overrides)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from widealign.runs.run import TENSORBOARD_ENV, check_writable
    from widealign.sweeps.catalogue import parse_override
    from widealign.sweeps.runners import validate
    from widealign.sweeps.sweep import (
        batch_groups,
        check_slurm,
        checked_tasks,
        other_runs,
        run_sweep,
        summarise,
    )

    if args.name is None:
        raise UsageError("name an experiment family or a family file (FILE.toml), or use --list")
    family = _family(args)
    out = args.out or f"results/{family.name}{'-smoke' if args.smoke else ''}"
    slurm_options = dict(parse_override(text) for text in args.slurm)
    if slurm_options and args.executor != "slurm":
        raise UsageError("--slurm goes with --executor slurm")
    if args.max_runs <= 0:
        raise UsageError(f"--max-runs must be a positive integer, got {args.max_runs}")
    if args.executor == "slurm" and not (args.dry_run or args.estimate):
        check_slurm(slurm_options)
    tasks = family.tasks(args.max_runs)
    if not tasks:
        raise UsageError(f"family {family.name!r} has no runs (a swept list is empty); nothing to do")
    if args.dry_run:
        for task in tasks:  # every run is checked before any is listed: a bad one lists nothing
            validate(task)
    if not (args.dry_run or args.estimate):
        tasks = checked_tasks(family, args.executor, args.workers, args.gpus_per_run, args.max_runs)
    try:
        size = args.batch_runs if args.executor in ("sequential", "process") else 1
        units = batch_groups(tasks, size, measure=not (args.dry_run or args.estimate))
    except ValueError as err:
        raise UsageError(str(err).replace("batch_runs", "--batch-runs")) from None
    batched = sum(len(u) for u in units if len(u) > 1)
    together = f", {batched} of them in batched groups of up to {max(map(len, units))}" if batched else ""
    if args.dry_run:
        for task in tasks:
            print(task.run_id)
        print(f"{len(tasks)} runs{together}")
        return 0
    if args.estimate:
        return _estimate(family, tasks, args)
    data_location(args)
    if args.tensorboard:
        check_writable(args.tensorboard)
        os.environ[TENSORBOARD_ENV] = str(Path(args.tensorboard).resolve())
    print(f"widealign run {family.name} (version {family.version}): {len(tasks)} runs into {out}{together}")
    others = other_runs(out, tasks)
    if others:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        print(
            f"note: {out} also holds {len(others)} run{'' if len(others) == 1 else 's'} not part of this "
            "sweep, left as they are "
            f"({shown}); 'widealign report {out} --latest-sweep' reports this sweep's runs only"
        )
    progress = not args.no_progress
    results = run_sweep(
        family, out, args.executor, args.workers, args.ray_address, progress=progress,
        gpus_per_run=args.gpus_per_run, threads=args.threads, slurm_options=slurm_options,
        batch_runs=args.batch_runs, max_runs=args.max_runs,
    )  # fmt: skip
    print(summarise(results))
    print(f"next: widealign report {out}")
    return 1 if any(r["status"] == "failed" for r in results) else 0


def _list() -> int:
    """The packaged families, from the static index (:mod:`widealign.cli.names`; no torch)."""
    print(f"{'family':<11} {'runs':>5} {'smoke':>5}  {'CPU':<9} {'GPU':<9} description")
    for name, family in index()["families"].items():
        cpu, gpu = family["time_classes"].values()
        reproduces = f" (reproduces {family['reproduces']})" if family["reproduces"] else ""
        print(
            f"{name:<11} {family['runs']:>5} {family['smoke']:>5}  {cpu:<9} {gpu:<9} "
            f"{family['description']}{reproduces}"
        )
    print(
        "CPU/GPU: expected time of the full family, run after run, from counted multiply-adds at a "
        "nominal 2e10/s (CPU: this project's 2-core machine) and 1e13/s (GPU: assumed, not measured); "
        "--estimate measures"
    )
    return 0


def _estimate(family: Family, tasks: list[Task], args: argparse.Namespace) -> int:
    from widealign.runs.config import resolve_device
    from widealign.runs.run import environment
    from widealign.sweeps.estimate import estimate_family, format_estimate

    if args.estimate_steps <= 0:
        raise ValueError(f"estimate steps must be a positive integer, got {args.estimate_steps}")
    devices = sorted({str(t.config.get("device", "cpu")) for t in tasks})
    env = environment(resolve_device(devices[0]))
    print(
        f"widealign run {family.name} (version {family.version}): expected run time on "
        f"{', '.join(devices)} ({env['device_name']}), torch {env['torch_version']}, "
        f"widealign {env['widealign_version']}, from {args.estimate_steps} timed steps per run shape"
    )
    estimates = estimate_family(family, args.estimate_steps, progress=not args.no_progress)
    print(format_estimate(estimates))
    print("not counted: loading data (streamed ImageNet), building models, writing checkpoints")
    return 0
