"""``widealign train``: one rule on one model and dataset, with results files and a checkpoint."""

from __future__ import annotations

import argparse
import sys

from widealign.cli.common import (
    EXIT_DIVERGED,
    UsageError,
    add_run_flags,
    check_rules,
    config,
    print_epoch,
    rule_option_argument,
    rule_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train one rule on one model and dataset")
    train.add_argument(
        "--rule",
        default="bp",
        help="a rule (widealign rules lists them) or package.module:Class (default bp)",
    )
    train.add_argument("--width", type=int, nargs="+", help="width, or one per conv layer")
    rule_option_argument(train)
    add_run_flags(train)
    train.add_argument(
        "--out", help="folder for result.json, metrics.csv, checkpoint.pt (resumes if present)"
    )
    train.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard scalars to DIR")


def run(args: argparse.Namespace) -> int:
    from widealign.runs.config import MODELS, width_does_not_apply
    from widealign.runs.run import check_writable, train_run

    check_rules([args.rule])
    width = None if args.width is None else (args.width[0] if len(args.width) == 1 else args.width)
    cfg = config(args, rule=args.rule, width=width, rule_options=rule_options(args.rule_option)).resolved()
    if width is not None and cfg.model not in MODELS:
        raise UsageError(width_does_not_apply(cfg.model, width).replace("leave the width", "leave --width"))
    if args.out is not None:
        check_writable(args.out)
    rule = cfg.rule if cfg.rule_variant == "default" else f"{cfg.rule} ({cfg.rule_variant} variant)"
    model = f"{cfg.model} width {cfg.width}" if cfg.model in MODELS else f"{cfg.model} (converted)"
    what = f"{rule} on {cfg.dataset}, {model}, lr {cfg.lr}, seed {cfg.seed}"
    print(f"widealign train: {what}")
    show = print_epoch(cfg.epochs)
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
