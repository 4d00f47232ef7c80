"""``widealign compare``: several rules by several widths, a table and a plot."""

from __future__ import annotations

import argparse

from widealign.cli.common import (
    PAPER_RULES,
    UsageError,
    add_run_flags,
    check_rules,
    config,
    rule_option_argument,
    rule_options,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    compare = sub.add_parser("compare", help="several rules x several widths: table and plot")
    compare.add_argument(
        "--rules", nargs="+", default=list(PAPER_RULES),
        help=f"default: the paper's rules ({', '.join(PAPER_RULES)}); widealign rules lists all",
    )  # fmt: skip
    compare.add_argument(
        "--widths", type=int, nargs="+",
        help="default 16 64 256 (a torchvision model: its own widths, so none may be given)",
    )  # fmt: skip
    rule_option_argument(compare)
    add_run_flags(compare)
    compare.add_argument("--out", default="results/compare", help="default results/compare")


def run(args: argparse.Namespace) -> int:
    from widealign.runs.config import MODELS, RunConfig, width_does_not_apply
    from widealign.sweeps.compare import format_table, run_compare

    check_rules(args.rules)
    base = config(args, rule_options=rule_options(args.rule_option))
    own = RunConfig(**{**base.as_dict(), "rule_options": {}}).resolved()
    if own.model not in MODELS and args.widths is not None:
        raise UsageError(width_does_not_apply(own.model, args.widths[0]).replace("the width", "--widths"))
    if args.widths is None:
        args.widths = [16, 64, 256] if own.model in MODELS else [own.width]
    for w in args.widths:
        RunConfig(
            **{**base.as_dict(), "width": w, "rule_options": {}}
        ).resolved()  # every bad value fails before training
    rows = run_compare(base, args.rules, args.widths, args.out, progress=not args.no_progress)
    print(format_table(rows))
    print(f"wrote {args.out}/compare.csv and {args.out}/compare.png")
    return 0
