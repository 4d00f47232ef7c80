"""Write the README's demo table from what ``make demo`` wrote, or check that the README has it.

``make demo`` runs ``widealign compare --out results/compare``, which writes
``results/compare/compare.csv``; this script formats that file as ``widealign compare`` prints it
(held-out accuracy in %, rules down, widths across) and puts it in README.md between the two
marker comments. With ``--check`` it writes nothing and exits with status 1, showing the
difference, when the README's table is not the one the CSV gives (``make demo-check`` reruns the
demo into a fresh folder and runs this check). The seconds per epoch in the CSV are not part of
the table: they vary from run to run, the accuracies do not.

    python scripts/demo_table.py                                  # update README.md
    python scripts/demo_table.py --csv results/compare/compare.csv --check
"""

from __future__ import annotations

import argparse
import csv
import difflib
import sys
from pathlib import Path

from widealign.sweeps.compare import format_table

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- demo table: written by scripts/demo_table.py from results/compare/compare.csv -->"
END = "<!-- end of demo table -->"


def read_rows(path: Path) -> list[dict]:
    """The rows of a ``compare.csv``, with numbers as numbers (empty cells as None)."""

    def number(text: str) -> float | None:
        return float(text) if text != "" else None

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no runs")
    return [
        {
            **row,
            "width": int(row["width"]),
            "lr": float(row["lr"]),
            "test_acc": number(row["test_acc"]),
            "test_loss": number(row["test_loss"]),
        }
        for row in rows
    ]


def table_block(rows: list[dict]) -> str:
    """The README's block: the markers around the table as ``widealign compare`` prints it."""
    return f"{BEGIN}\n```\n{format_table(rows)}\n```\n{END}"


def with_table(readme: str, block: str) -> str:
    """``readme`` with the text from the first marker to the second replaced by ``block``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README lacks the demo table markers {BEGIN!r} ... {END!r}")
    return readme[:start] + block + readme[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=ROOT / "results/compare/compare.csv")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument(
        "--check", action="store_true", help="fail if the README's table differs; write nothing"
    )
    args = parser.parse_args(argv)
    if not args.csv.is_file():
        print(f"demo_table: no {args.csv}; run `make demo` first", file=sys.stderr)
        return 2
    old = args.readme.read_text()
    new = with_table(old, table_block(read_rows(args.csv)))
    if args.check:
        if new != old:
            diff = difflib.unified_diff(
                old.splitlines(), new.splitlines(), "README.md", "from the demo", lineterm=""
            )
            print("\n".join(diff))
            print(f"demo_table: the README's demo table differs from {args.csv}", file=sys.stderr)
            return 1
        print(f"demo_table: the README's demo table matches {args.csv}")
        return 0
    if new != old:
        args.readme.write_text(new)
    print(f"demo_table: wrote the table from {args.csv} into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
