"""``widealign bench``: each rule's step against bp and a bare loop, or batched runs against separate ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from widealign.cli.common import PAPER_RULES, add_threads, check_rules
from widealign.models import CONV_PRESETS
from widealign.runs.config import DTYPES


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    add_threads(b)
    b.add_argument("--json", help="also write the rows to this JSON file")


def run(args: argparse.Namespace) -> int:
    from widealign.bench.batched import bench_batched, format_bench_batched
    from widealign.bench.steps import bench, format_bench
    from widealign.runs.run import check_writable

    batched = args.batch_runs is not None
    args.rules = args.rules or (["bp"] if batched else list(PAPER_RULES))
    args.widths = args.widths or ([8, 16, 32, 64, 128, 256] if batched else [64, 256])
    check_rules(args.rules)
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
