"""``widealign rules``: the learning rules, their variants and options.

The packaged rules come from the static index (:mod:`widealign.cli.names`), so listing them does
not import torch; where installed plugins declare rules (entry points), the live registry is
listed instead, which imports them.
"""

from __future__ import annotations

import argparse

from widealign.cli.names import index, plugin_rule_names, rule_entry


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("rules", help="list the learning rules")


def rule_listing() -> dict[str, dict]:
    """Each rule's one-line description, variants and options (``{name: default as text}``)."""
    packaged = index()["rules"]
    if all(name in packaged for name in plugin_rule_names()):
        return packaged
    from widealign.rules import RULES

    return {name: rule_entry(name) for name in RULES}


def run(args: argparse.Namespace) -> int:
    rules = rule_listing()
    width = max(map(len, rules))
    for name, rule in rules.items():
        print(f"{name:<{width}} {rule['description']}")
        if len(rule["variants"]) > 1:
            first, *others = rule["variants"]
            names = ", ".join([first if first == "default" else f"{first} (default)", *others])
            print(f"{'':<{width}}   variants: {names}")
        if rule["options"]:
            print(f"{'':<{width}}   options: {', '.join(f'{k}={v}' for k, v in rule['options'].items())}")
    return 0
