"""``widealign report``: a results folder collected into results.csv and the papers' figures."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser("report", help="collect a results folder into results.csv and the paper's figures")
    rep.add_argument("results_dir", help="a folder of runs (searched recursively for result.json)")
    rep.add_argument("--out", help="where to write the table and figures (default: results_dir)")
    rep.add_argument(
        "--latest-sweep", action="store_true",
        help="only the runs of the last 'widealign run' into results_dir (its sweep.json)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from widealign.report import report
    from widealign.runs.run import check_writable

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
