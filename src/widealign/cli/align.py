"""``widealign align``: the input-weight alignment score of saved runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from widealign.cli.common import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    al = sub.add_parser("align", help="input-weight alignment score of saved runs (docs/method.md)")
    al.add_argument("runs", nargs="+", help="one alignment score run, or two runs from the same init")
    al.add_argument("--draws", type=int, default=100, help="noise draws (default 100)")
    al.add_argument("--noise-batch", type=int, default=100, help="noise batch size (default 100)")
    al.add_argument("--seed", type=int, default=0, help="seed of the noise and the shuffled control")
    al.add_argument("--json", help="also write the scores to this JSON file")


def run(args: argparse.Namespace) -> int:
    from widealign.runs.run import check_writable
    from widealign.studies.align_runs import align_runs

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
