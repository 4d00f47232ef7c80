"""The ``widealign`` command: ``train``, ``compare``, ``run``, ``report``, ``align``, ``bench``, ``rules``.

Bad input (an unknown rule or dataset, a width of 0, strides that do not match the widths, a
learning rate that is not a positive number, an unwritable output folder), a damaged result or
checkpoint file, an output folder in use by another process or a full disk ends with one line on
stderr, ``widealign: error: ...``, and exit status 2; a diverged run ends with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tqdm.auto import tqdm

import widealign
from widealign.data import DATASETS
from widealign.experiments.align_runs import align_runs
from widealign.experiments.bench import bench, format_bench
from widealign.experiments.bench_batched import bench_batched, format_bench_batched
from widealign.experiments.catalogue import Family, Task, family_names, load_family, parse_override
from widealign.experiments.compare import format_table, run_compare
from widealign.experiments.config import DTYPES, MODELS, OPTIMIZERS, RunConfig, resolve_device
from widealign.experiments.estimate import estimate_family, family_time_classes, format_estimate
from widealign.experiments.run import (
    DATA_DIR_ENV,
    DOWNLOAD_ENV,
    TENSORBOARD_ENV,
    check_writable,
    environment,
    train_run,
)
from widealign.experiments.runners import validate
from widealign.experiments.sweep import (
    DEFAULT_BATCH_RUNS,
    EXECUTORS,
    batch_groups,
    checked_tasks,
    other_runs,
    run_sweep,
    summarise,
)
from widealign.losses import LOSSES
from widealign.models import CONV_PRESETS, NORMS
from widealign.models.layers import PARAMETERIZATIONS
from widealign.report import report
from widealign.rules import RULES, VARIANTS, rule_options
from widealign.system import set_threads
from widealign.train import EpochRecord
from widealign.train.loop import AUTOCAST_DTYPES

#: The rules of the paper and its baselines: what compare and bench run unless told otherwise.
PAPER_RULES = ("bp", "readout", "align-zero", "align-ada", "align-prop", "fa", "dfa")

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A command-line mistake, reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (default digits)")
    p.add_argument("--data-dir", help="where data sets live (default $WIDEALIGN_DATA_DIR or ./data)")
    p.add_argument("--download", action="store_true", help="download a missing data set (never by default)")
    p.add_argument(
        "--train-size", type=int,
        help="train on the first N training examples (batch size if not given: N below 100, else gcd(100,N))",
    )  # fmt: skip
    p.add_argument(
        "--holdout", type=int,
        help="training images held out for evaluation, the first ones (mnist, kmnist, cifar10; default 5000)",
    )  # fmt: skip
    p.add_argument(
        "--eval-train", action="store_true", default=None,
        help="re-evaluate the whole training set after every epoch (default: on for add only)",
    )  # fmt: skip
    p.add_argument("--official-test", action="store_true", help="evaluate on the official test set")
    p.add_argument(
        "--model",
        help=f"{', '.join(MODELS)} or a torchvision classification model such as resnet18, converted "
        "(default: the dataset's)",
    )
    p.add_argument("--preset", choices=CONV_PRESETS, help="conv-net preset: depth and strides of the paper")
    p.add_argument("--strides", type=int, nargs="+", help="conv strides, one per layer (overrides --preset)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the mlp (default 2)")
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--parameterization", choices=PARAMETERIZATIONS, default="ntk")
    p.add_argument("--norm", choices=NORMS, default="batch-axis", help="conv-net normalisation")
    p.add_argument("--eps", type=float, default=1e-6, help="normalisation epsilon (default 1e-6)")
    p.add_argument("--loss", choices=LOSSES, help="default: the paper's (mse; sequence-mse for add)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument(
        "--variant", choices=VARIANTS, default="default",
        help="reference: align-ada, align-zero and readout as the authors' code (docs/method.md#variants)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, help="learning rate (default: the dataset's, 5 for digits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument(
        "--autocast", choices=list(AUTOCAST_DTYPES),
        help="bf16: train and evaluate under bfloat16 autocast (default off; no effect with float64)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads(p)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads", type=int,
        help="torch threads (default: the CPUs this process may use; a sweep worker gets its share)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="widealign", description="Train wide networks without backprop.")
    parser.add_argument("--version", action="version", version=f"widealign {widealign.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one rule on one model and dataset")
    train.add_argument("--rule", default="bp", help=f"one of {', '.join(RULES)} (default bp)")
    train.add_argument("--width", type=int, nargs="+", help="width, or one per conv layer")
    _rule_option_argument(train)
    _add_run_flags(train)
    train.add_argument(
        "--out", help="folder for result.json, metrics.csv, checkpoint.pt (resumes if present)"
    )
    train.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard scalars to DIR")

    compare = sub.add_parser("compare", help="several rules x several widths: table and plot")
    compare.add_argument(
        "--rules", nargs="+", default=list(PAPER_RULES),
        help=f"default: the paper's rules ({', '.join(PAPER_RULES)}); widealign rules lists all",
    )  # fmt: skip
    compare.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    _rule_option_argument(compare)
    _add_run_flags(compare)
    compare.add_argument("--out", default="results/compare", help="default results/compare")

    b = sub.add_parser("bench", help="time one step of every rule against bp")
    b.add_argument(
        "--model", choices=("convnet", "mlp", "rnn"), default="convnet", help="rnn: --batch-runs only"
    )
    b.add_argument("--preset", choices=CONV_PRESETS, default="kmnist")
    b.add_argument("--widths", type=int, nargs="+", help="default 64 256 (with --batch-runs: 8 to 256)")
    b.add_argument("--rules", nargs="+", help="default: the paper's rules (with --batch-runs: bp)")
    b.add_argument("--input-shape", type=int, nargs="+", default=[1, 28, 28], help="C H W (default 1 28 28)")
    b.add_argument("--batch-size", type=int, default=100)
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--device", default="cpu")
    b.add_argument("--dtype", choices=DTYPES, default="float32")
    b.add_argument(
        "--batch-runs", type=int, metavar="K",
        help="instead: time K runs one after another against K runs as one batched model "
        "(widths default to 8 16 32 64 128 256, rules to bp)",
    )  # fmt: skip
    b.add_argument(
        "--contended", action="store_true", help="time again beside one busy process and print the slowdown"
    )
    _add_threads(b)
    b.add_argument("--json", help="also write the rows to this JSON file")

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
    run.add_argument("--executor", choices=EXECUTORS, default="sequential")
    run.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE",
        help="with --executor slurm: a submitit parameter (timeout_min=600, slurm_partition=gpu, "
        "gpus_per_node=1, mem_gb=16, ...; cluster=local runs the jobs here), repeatable",
    )  # fmt: skip
    run.add_argument("--tensorboard", metavar="DIR", help="TensorBoard scalars of each run in DIR/<run>")
    run.add_argument(
        "--batch-runs", type=int, metavar="K",
        help="train K runs that differ only in seed (or seed and lr) as one batched model (sequential "
        f"and process executors; default: up to {DEFAULT_BATCH_RUNS} where it pays, small runs such as "
        "the Add task's; 1 turns it off)",
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
    _add_threads(run)

    al = sub.add_parser("align", help="input-weight alignment score of saved runs (docs/method.md)")
    al.add_argument("runs", nargs="+", help="one alignment score run, or two runs from the same init")
    al.add_argument("--draws", type=int, default=100, help="noise draws (default 100)")
    al.add_argument("--noise-batch", type=int, default=100, help="noise batch size (default 100)")
    al.add_argument("--seed", type=int, default=0, help="seed of the noise and the shuffled control")
    al.add_argument("--json", help="also write the scores to this JSON file")

    rep = sub.add_parser("report", help="collect a results folder into results.csv and the paper's figures")
    rep.add_argument("results_dir", help="a folder of runs (searched recursively for result.json)")
    rep.add_argument("--out", help="where to write the table and figures (default: results_dir)")
    rep.add_argument(
        "--latest-sweep", action="store_true",
        help="only the runs of the last 'widealign run' into results_dir (its sweep.json)",
    )  # fmt: skip

    sub.add_parser("rules", help="list the learning rules")
    return parser


def _rule_option_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rule-option", action="append", default=[], metavar="NAME=VALUE",
        help="a rule's own setting, repeatable (e.g. iterations=50; widealign rules lists them)",
    )  # fmt: skip


def _rule_options(texts: Sequence[str]) -> dict[str, str]:
    options = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"rule option {text!r} is not of the form name=value")
        options[name.strip()] = value.strip()
    return options


def _config(args: argparse.Namespace, **fields: Any) -> RunConfig:
    return RunConfig(
        dataset=args.dataset, model=args.model, preset=args.preset, strides=args.strides,
        depth=args.depth, kernel_size=args.kernel_size, parameterization=args.parameterization,
        norm=args.norm, eps=args.eps, loss=args.loss, optimizer=args.optimizer, lr=args.lr,
        variant=args.variant, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        device=args.device, dtype=args.dtype, train_size=args.train_size, holdout=args.holdout,
        official_test=args.official_test, eval_train=args.eval_train, autocast=args.autocast, **fields,
    )  # fmt: skip


def _data_location(args: argparse.Namespace) -> None:
    """``--data-dir``/``--download`` become the environment that :func:`load_data` reads."""
    if getattr(args, "data_dir", None):
        os.environ[DATA_DIR_ENV] = str(Path(args.data_dir).resolve())
    if getattr(args, "download", False):
        os.environ[DOWNLOAD_ENV] = "1"


def _print_epoch(total: int) -> Any:
    def show(r: EpochRecord) -> None:
        acc = "" if r.train_acc is None else f"  train_acc {100 * r.train_acc:5.1f}%"
        test_acc = "" if r.test_acc is None else f"  test_acc {100 * r.test_acc:5.1f}%"
        tqdm.write(
            f"epoch {r.epoch:>3}/{total}  train_loss {r.train_loss:.4f}{acc}  "
            f"test_loss {r.test_loss:.4f}{test_acc}  ({r.seconds:.1f} s)"
        )

    return show


def _check_rules(rules: Sequence[str]) -> None:
    for r in rules:
        if r not in RULES:
            raise ValueError(f"unknown rule {r!r}; choose one of {', '.join(RULES)}")


def cmd_train(args: argparse.Namespace) -> int:
    _check_rules([args.rule])
    width = None if args.width is None else (args.width[0] if len(args.width) == 1 else args.width)
    cfg = _config(args, rule=args.rule, width=width, rule_options=_rule_options(args.rule_option)).resolved()
    if args.out is not None:
        check_writable(args.out)
    rule = cfg.rule if cfg.rule_variant == "default" else f"{cfg.rule} ({cfg.rule_variant} variant)"
    model = f"{cfg.model} width {cfg.width}" if cfg.model in MODELS else f"{cfg.model} (converted)"
    what = f"{rule} on {cfg.dataset}, {model}, lr {cfg.lr}, seed {cfg.seed}"
    print(f"widealign train: {what}")
    show = _print_epoch(cfg.epochs)
    result = train_run(
        cfg, args.out, progress=not args.no_progress, on_epoch=show, tensorboard=args.tensorboard
    )
    done = result.get("already_complete")
    if done:
        epochs = len(result["epochs"])
        after = f"{epochs} epoch{'' if epochs == 1 else 's'}"
        print(f"{args.out} already holds this run ({result['status']} after {after}); nothing written")
    elif result.get("resumed_from_epoch"):
        print(f"resumed from epoch {result['resumed_from_epoch']}")
    if result["status"] == "diverged":
        print(f"widealign: error: {result['error']}", file=sys.stderr)
        return EXIT_DIVERGED
    if args.out is not None and not done:
        print(f"wrote {args.out}/result.json and {args.out}/metrics.csv")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    _check_rules(args.rules)
    base = _config(args, rule_options=_rule_options(args.rule_option))
    for w in args.widths:
        RunConfig(
            **{**base.as_dict(), "width": w, "rule_options": {}}
        ).resolved()  # every bad value fails before training
    rows = run_compare(base, args.rules, args.widths, args.out, progress=not args.no_progress)
    print(format_table(rows))
    print(f"wrote {args.out}/compare.csv and {args.out}/compare.png")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    batched = args.batch_runs is not None
    args.rules = args.rules or (["bp"] if batched else list(PAPER_RULES))
    args.widths = args.widths or ([8, 16, 32, 64, 128, 256] if batched else [64, 256])
    _check_rules(args.rules)
    if args.json:
        check_writable(Path(args.json).parent)
    if batched:
        rows = bench_batched(
            args.batch_runs, model=args.model, preset=args.preset, input_shape=args.input_shape,
            widths=args.widths, rules=args.rules, batch_size=args.batch_size, repeats=args.repeats,
            device=args.device, dtype=DTYPES[args.dtype],
        )  # fmt: skip
        print(format_bench_batched(rows))
    else:
        rows = bench(
            model=args.model, widths=args.widths, rules=args.rules, preset=args.preset,
            input_shape=args.input_shape, batch_size=args.batch_size, repeats=args.repeats,
            device=args.device, dtype=DTYPES[args.dtype], contended=args.contended,
        )  # fmt: skip
        print(format_bench(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    for name, cls in RULES.items():
        print(f"{name:<{max(map(len, RULES))}} {(cls.__doc__ or '').strip().splitlines()[0]}")
        options = rule_options(name)
        if options:
            print(
                f"{'':<{max(map(len, RULES))}}   options: {', '.join(f'{k}={v}' for k, v in options.items())}"
            )
    return 0


def _family(args: argparse.Namespace) -> Family:
    family = load_family(args.name)
    if args.smoke:
        family = family.smoke_version()
    overrides = dict(parse_override(text) for text in args.set)
    for key, value in (("epochs", args.epochs), ("dataset", args.dataset), ("device", args.device)):
        if value is not None:
            overrides[key] = value
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


def cmd_run(args: argparse.Namespace) -> int:
    if args.list:
        print(f"{'family':<11} {'runs':>5} {'smoke':>5}  {'CPU':<9} {'GPU':<9} description")
        for name in family_names():
            family = load_family(name)
            cpu, gpu = family_time_classes(family).values()
            runs, smoke = len(family.tasks()), len(family.smoke_version().tasks())
            print(f"{name:<11} {runs:>5} {smoke:>5}  {cpu:<9} {gpu:<9} {family.description}")
        print(
            "CPU/GPU: expected time of the full family, run after run, from counted multiply-adds at a "
            "nominal 2e10/s (CPU: this project's 2-core machine) and 1e13/s (GPU: assumed, not measured); "
            "--estimate measures"
        )
        return 0
    if args.name is None:
        raise UsageError("name an experiment family or a family file (FILE.toml), or use --list")
    family = _family(args)
    out = args.out or f"results/{family.name}{'-smoke' if args.smoke else ''}"
    slurm_options = dict(parse_override(text) for text in args.slurm)
    if slurm_options and args.executor != "slurm":
        raise UsageError("--slurm goes with --executor slurm")
    tasks = family.tasks()
    if not (args.dry_run or args.estimate):
        tasks = checked_tasks(family, args.executor, args.workers, args.gpus_per_run)
    try:
        units = batch_groups(tasks, args.batch_runs if args.executor in ("sequential", "process") else 1)
    except ValueError as err:
        raise UsageError(str(err).replace("batch_runs", "--batch-runs")) from None
    batched = sum(len(u) for u in units if len(u) > 1)
    together = f", {batched} of them in batched groups of up to {max(map(len, units))}" if batched else ""
    if args.dry_run:
        for task in tasks:
            validate(task)
            print(task.run_id)
        print(f"{len(tasks)} runs{together}")
        return 0
    if args.estimate:
        return _estimate(family, tasks, args)
    _data_location(args)
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
        batch_runs=args.batch_runs,
    )  # fmt: skip
    print(summarise(results))
    print(f"next: widealign report {out}")
    return 1 if any(r["status"] == "failed" for r in results) else 0


def _estimate(family: Family, tasks: list[Task], args: argparse.Namespace) -> int:
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


def cmd_align(args: argparse.Namespace) -> int:
    if len(args.runs) > 2:
        raise UsageError("give one alignment score run or two run folders")
    for name in ("draws", "noise_batch"):
        if getattr(args, name) <= 0:
            raise ValueError(f"{name.replace('_', ' ')} must be a positive integer")
    if args.seed < 0:
        raise ValueError(f"seed must be a non-negative integer (0, 1, 2, ...), got {args.seed}")
    if len(args.runs) == 2 and Path(args.runs[0]).resolve() == Path(args.runs[1]).resolve():
        print(
            f"widealign: warning: {args.runs[0]} is given twice; this compares the run with itself",
            file=sys.stderr,
        )
    if args.json:
        check_writable(Path(args.json).parent)
    scores = align_runs(*args.runs, draws=args.draws, noise_batch=args.noise_batch, seed=args.seed)
    print(f"{'layer':>5} {'alignment':>10} {'shuffled':>9}")
    for i, s in enumerate(scores):
        print(f"{i:>5} {s.score:>10.4f} {s.shuffled:>9.4f}")
    if args.json:
        rows = [{"layer": i, "alignment": s.score, "shuffled": s.shuffled} for i, s in enumerate(scores)]
        Path(args.json).write_text(json.dumps({"runs": args.runs, "layers": rows}, indent=2) + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_writable(args.out)
    summary = report(args.results_dir, args.out, latest_sweep=args.latest_sweep)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
    print(f"{summary['runs']} runs ({counts})")
    for path, reason in summary["unreadable"]:
        print(f"unreadable: {path}: {reason}")
    print(f"table: {summary['table']}")
    for path in summary["figures"]:
        print(f"figure: {path}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "compare": cmd_compare,
    "bench": cmd_bench,
    "rules": cmd_rules,
    "run": cmd_run,
    "report": cmd_report,
    "align": cmd_align,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (also used by ``python -m widealign``)."""
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown and args.command == "run":
            raise UsageError(
                f"unrecognized arguments: {' '.join(unknown)}; on run, set any configuration key of "
                "the family's runs with --set key=value (e.g. --set batch_size=50)"
            )
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        for name in ("width", "widths"):
            for w in getattr(args, name, None) or []:
                if w <= 0:
                    raise ValueError(f"width must be a positive integer, got {w}")
        for name in ("out", "json", "data_dir"):
            if getattr(args, name, None) is not None and not getattr(args, name).strip():
                raise UsageError(f"--{name.replace('_', '-')} needs a path, got an empty string")
        _data_location(args)
        set_threads(getattr(args, "threads", None))
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # output piped into a program that stopped reading (| head): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
        return 0
    except (UsageError, ValueError, OSError) as err:
        print(f"widealign: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("widealign: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
