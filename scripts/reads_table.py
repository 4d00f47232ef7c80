"""Write docs/method.md's table of what each rule reads, or check that the page has it.

The table is made from the rules' own declarations (``Rule.reads`` and ``Rule.reads_settings``,
which tests/testing/test_transport.py holds to what :func:`widealign.testing.forward_weight_reads`
finds) by :func:`widealign.testing.transport.reads_table`, and goes between the two marker comments.
With ``--check`` it writes nothing and exits with status 1, showing the difference, when the page's
table is not the one the declarations give (tests/test_reads_table.py runs the check).

    python scripts/reads_table.py            # update docs/method.md
    python scripts/reads_table.py --check
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from widealign.rules import RULES
from widealign.rules.registry import _registered
from widealign.testing.transport import reads_table

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- reads table: written by scripts/reads_table.py from the rules' declarations -->"
END = "<!-- end of reads table -->"


def packaged_rules() -> list:
    """The packaged rules, in ``widealign rules`` order (installed plugins left out)."""
    return [RULES[n] for n in _registered if RULES[n].__module__.startswith("widealign.")]


def table_block() -> str:
    """The page's block: the markers around the table."""
    return f"{BEGIN}\n{reads_table(packaged_rules())}\n{END}"


def with_table(page: str, block: str) -> str:
    """``page`` with the text from the first marker to the second replaced by ``block``."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page lacks the reads table markers {BEGIN!r} ... {END!r}")
    return page[:start] + block + page[end + len(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "method.md")
    parser.add_argument(
        "--check", action="store_true", help="fail if the page's table differs; write nothing"
    )
    args = parser.parse_args(argv)
    old = args.page.read_text()
    new = with_table(old, table_block())
    if args.check:
        if new != old:
            diff = difflib.unified_diff(
                old.splitlines(), new.splitlines(), str(args.page), "declarations", lineterm=""
            )
            print("\n".join(diff), file=sys.stderr)
            print(
                f"reads_table: {args.page}'s table differs; run python scripts/reads_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    args.page.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
