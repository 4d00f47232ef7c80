"""``widealign bench``: in one run, each rule's step against bp and a bare loop, the matmul rate
a step reaches, batched runs against separate ones, the relaxation rules' iterations, and (on
request) peak memory; or, with ``--batch-runs K``, batched runs only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from widealign.cli.common import PAPER_RULES, add_threads, check_rules
from widealign.cli.names import index


def add_parser(sub: argparse._SubParsersAction) -> None:
    names = index()
    b = sub.add_parser("bench", help="time one step of every rule against bp")
    b.add_argument(
        "--model", choices=("convnet", "mlp", "rnn"), default="convnet", help="rnn: --batch-runs only"
    )
    b.add_argument("--preset", choices=names["conv_presets"], default="kmnist")
    b.add_argument("--widths", type=int, nargs="+", help="default 16 64 (with --batch-runs: 8 to 256)")
    b.add_argument("--rules", nargs="+", help="default: the paper's rules (with --batch-runs: bp)")
    b.add_argument("--input-shape", type=int, nargs="+", default=[1, 28, 28], help="C H W (default 1 28 28)")
    b.add_argument("--batch-size", type=int, default=100)
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--device", default="cpu")
    b.add_argument("--dtype", choices=names["dtypes"], default="float32")
    b.add_argument("--autocast", choices=("bf16",), help="time the rules' steps under bf16 autocast")
    b.add_argument(
        "--sections", nargs="+", default=["steps", "batched", "relaxation"],
        choices=("steps", "batched", "relaxation", "memory", "execution"),
        help="what to measure (default: steps batched relaxation; memory measures peak memory per rule "
        "in fresh processes at --memory-widths, estimating where a run would not fit; execution times "
        "bp and the Align rules with --norm batch-axis-native and --compile against the default)",
    )  # fmt: skip
    b.add_argument("--members", type=int, default=5, help="runs per batched run in the batched section")
    b.add_argument("--memory-widths", type=int, nargs="+", default=[256, 1024, 4096])
    b.add_argument(
        "--measure-up-to", type=float, default=2.0, metavar="GB",
        help="memory section: measure runs estimated at most this many GB, estimate the rest (default 2)",
    )  # fmt: skip
    b.add_argument(
        "--batch-runs", type=int, metavar="K",
        help="instead: time K runs one after another against K runs as one batched model "
        "(widths default to 8 16 32 64 128 256, rules to bp)",
    )  # fmt: skip
    b.add_argument(
        "--contended", action="store_true", help="time again beside one busy process and print the slowdown"
    )
    add_threads(b)
    b.add_argument("--json", help="also write every figure to this JSON file (with the command)")


def run(args: argparse.Namespace) -> int:
    from widealign.bench.batched import bench_batched, format_bench_batched
    from widealign.bench.execution import format_execution
    from widealign.bench.memory import format_memory_table
    from widealign.bench.steps import bench, format_bench
    from widealign.bench.suite import bench_suite, format_relaxation, machine
    from widealign.runs.config import DTYPES
    from widealign.runs.run import check_writable

    batched = args.batch_runs is not None
    args.rules = args.rules or (["bp"] if batched else list(PAPER_RULES))
    args.widths = args.widths or ([8, 16, 32, 64, 128, 256] if batched else [16, 64])
    check_rules(args.rules)
    if args.json:
        check_writable(Path(args.json).parent)
    common = dict(
        model=args.model, preset=args.preset, input_shape=args.input_shape, widths=args.widths,
        rules=args.rules, batch_size=args.batch_size, repeats=args.repeats, device=args.device,
        dtype=DTYPES[args.dtype],
    )  # fmt: skip
    if batched:
        out = {"machine": machine(args.device), "batched": bench_batched(args.batch_runs, **common)}
        print(format_bench_batched(out["batched"]))
    elif args.contended:
        out = {
            "machine": machine(args.device),
            "steps": bench(contended=True, autocast=args.autocast, **common),
        }
        print(format_bench(out["steps"]))
    else:
        out = bench_suite(
            sections=args.sections, members=args.members, memory_widths=args.memory_widths,
            measure_up_to=args.measure_up_to * 1e9, autocast=args.autocast, **common,
        )  # fmt: skip
        parts = []
        if "steps" in out:
            parts.append(format_bench(out["steps"]))
        if "batched" in out:
            parts.append(format_bench_batched(out["batched"]))
        if "relaxation" in out:
            parts.append(format_relaxation(out["relaxation"]))
        if "memory" in out:
            parts.append(format_memory_table(out["memory"]))
        if "execution" in out:
            parts.append(format_execution(out["execution"]))
        load = out["machine"].get("loadavg")
        if load:
            parts.append(
                f"load average {load[0]:.2f} before, {out['machine_after'][0]:.2f} after "
                f"({out['machine']['cpus']} CPUs)"
            )
        print("\n\n".join(parts))
    if args.json:
        out["command"] = (
            "widealign " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "widealign bench"
        )
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0
