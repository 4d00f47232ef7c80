"""The ``widealign`` command: ``train``, ``compare``, ``run``, ``report``, ``align``, ``bench``, ``rules``.

Each command lives in its own module of this package (``widealign.cli.train``, ...), with an
``add_parser`` that declares its flags and a ``run`` that carries it out. Bad input (an unknown rule
or dataset, a width of 0, strides that do not match the widths, a learning rate that is not a
positive number, an unwritable output folder), a damaged result or checkpoint file, an output
folder in use by another process or a full disk ends with one line on stderr,
``widealign: error: ...``, and exit status 2; a diverged run ends with exit status 1.

Start-up is kept short: building the parser imports no torch (choices come from the static index,
:mod:`widealign.cli.names`), and ``--version``, ``--help``, ``rules`` and ``run --list`` never
import it (tests/cli/test_startup.py; ``python scripts/bench_startup.py`` times them).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import widealign
from widealign.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, _Parser, data_location
from widealign.system import set_threads

#: The commands, in the order ``--help`` lists them: each is the module ``widealign.cli.<name>``.
COMMANDS = ("train", "compare", "bench", "run", "align", "report", "rules")


def build_parser() -> argparse.ArgumentParser:
    """The full parser: every command's flags."""
    parser = _Parser(prog="widealign", description="Train wide networks without backprop.")
    parser.add_argument("--version", action="version", version=f"widealign {widealign.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"widealign.cli.{name}").add_parser(sub)
    return parser


def needs_torch(args: argparse.Namespace) -> bool:
    """Whether the command trains, measures or reads runs (so torch's threads must be sized):
    everything but listing the rules and the families."""
    return not (args.command == "rules" or (args.command == "run" and args.list))


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
        data_location(args)
        if needs_torch(args):
            set_threads(getattr(args, "threads", None))
        return importlib.import_module(f"widealign.cli.{args.command}").run(args)
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
