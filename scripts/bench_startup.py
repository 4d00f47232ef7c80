"""Time how long the ``widealign`` command takes to answer, each command in a fresh process.

A benchmark, not a test (timings depend on the machine and its load): each command runs
``--repeats`` times (default 5) as ``python -m widealign ...`` in a new interpreter, interleaved
(one of each, then again), and the median wall time is printed with the load average before and
after. The commands that need no training (``--version``, ``--help``, ``rules``, ``run --list``)
should answer in well under a second: they do not import torch (tests/cli/test_startup.py checks
that, without timing anything).

    python scripts/bench_startup.py
    python scripts/bench_startup.py --repeats 9 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: The commands timed, as arguments to ``widealign``.
COMMANDS = (("--version",), ("--help",), ("rules",), ("run", "--list"))


def time_command(args: tuple[str, ...]) -> float:
    """Wall seconds of ``python -m widealign ARGS`` in a fresh interpreter (output discarded)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "widealign", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def bench_startup(repeats: int = 5) -> dict[str, dict[str, float]]:
    """Median, minimum and maximum wall seconds of each command over ``repeats`` interleaved rounds."""
    times: dict[str, list[float]] = {" ".join(c): [] for c in COMMANDS}
    for _ in range(repeats):
        for command in COMMANDS:
            times[" ".join(command)].append(time_command(command))
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.repeats <= 0:
        parser.error(f"--repeats must be a positive integer, got {args.repeats}")
    before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    figures = bench_startup(args.repeats)
    after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{'command':<22} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, f in figures.items():
        print(f"widealign {name:<12} {f['median']:>9.3f} {f['min']:>7.3f} {f['max']:>7.3f}")
    if before is not None:
        cpus = os.cpu_count()
        print(f"load average {before:.2f} before, {after:.2f} after ({cpus} CPUs); {args.repeats} runs each")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeats": args.repeats, "loadavg": [before, after], "commands": figures}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
