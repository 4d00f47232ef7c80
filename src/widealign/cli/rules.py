"""``widealign rules``: the learning rules, their variants and options."""

from __future__ import annotations

import argparse

from widealign.rules import RULES, rule_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("rules", help="list the learning rules")


def run(args: argparse.Namespace) -> int:
    for name, cls in RULES.items():
        print(f"{name:<{max(map(len, RULES))}} {(cls.__doc__ or '').strip().splitlines()[0]}")
        if len(cls.variants) > 1:
            first, *others = cls.variants
            names = ", ".join([first if first == "default" else f"{first} (default)", *others])
            print(f"{'':<{max(map(len, RULES))}}   variants: {names}")
        options = rule_options(name)
        if options:
            print(
                f"{'':<{max(map(len, RULES))}}   options: {', '.join(f'{k}={v}' for k, v in options.items())}"
            )
    return 0
