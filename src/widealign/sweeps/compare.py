"""Several rules x several widths on one data set: a table and a plot of held-out accuracy.

Every (rule, width) pair is an ordinary resumable run in ``OUT/runs/<rule>-w<width>/``, so an
interrupted comparison picks up where it stopped. ``OUT/compare.csv`` and ``OUT/compare.png``
summarise the final epoch of each run (held-out accuracy; held-out loss for regression data).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from widealign.rules import rule_options
from widealign.runs.config import RunConfig
from widealign.runs.run import check_writable, train_run

CSV_FIELDS = [
    "rule",
    "width",
    "lr",
    "seed",
    "status",
    "test_acc",
    "test_loss",
    "train_loss",
    "seconds_per_epoch",
]


def run_compare(
    base: RunConfig,
    rules: Sequence[str],
    widths: Sequence[int],
    out: str | os.PathLike,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``base`` with every rule at every width; returns one summary row per run.

    ``base.rule_options`` go to the rules that take them (``iterations`` to the iterative rules only);
    an option that none of ``rules`` takes is an error.
    """
    out = check_writable(out)
    options = {r: _options_for(r, base.rule_options) for r in rules}
    unused = set(base.rule_options) - {k for o in options.values() for k in o}
    if unused:
        raise ValueError(f"no rule of {', '.join(rules)} takes the option {sorted(unused)[0]!r}")
    configs = [
        replace(base, rule=r, width=w, rule_options=options[r]).resolved() for w in widths for r in rules
    ]
    rows = []
    for cfg in tqdm(configs, desc="compare", unit="run", disable=not progress, position=0):
        result = train_run(
            cfg, out / "runs" / f"{cfg.rule.replace(':', '-')}-w{cfg.width}", progress=progress
        )
        rows.append(summary_row(result))
    write_csv(rows, out / "compare.csv")
    plot_compare(rows, out / "compare.png")
    return rows


def _options_for(rule: str, options: dict[str, Any]) -> dict[str, Any]:
    known = rule_options(rule)
    return {k: v for k, v in options.items() if k in known}


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """The final epoch of one run, flattened for the table."""
    cfg, epochs = result["config"], result["epochs"]
    last = epochs[-1] if epochs else {}
    return {
        "rule": cfg["rule"],
        "width": cfg["width"],
        "lr": cfg["lr"],
        "seed": cfg["seed"],
        "status": result["status"],
        "test_acc": last.get("test_acc"),
        "test_loss": last.get("test_loss"),
        "train_loss": last.get("train_loss"),
        "seconds_per_epoch": sum(e["seconds"] for e in epochs) / len(epochs) if epochs else None,
    }


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _metric(rows: list[dict[str, Any]]) -> tuple[str, str]:
    if any(r["test_acc"] is not None for r in rows):
        return "test_acc", "held-out accuracy (%)"
    return "test_loss", "held-out loss"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rules down, widths across: held-out accuracy in % (or loss); ``div`` marks a diverged run."""
    key, label = _metric(rows)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    widths = sorted({r["width"] for r in rows})
    cell = {(r["rule"], r["width"]): r for r in rows}

    def fmt(r: dict[str, Any] | None) -> str:
        if r is None:
            return "-"
        if r["status"] == "diverged":
            return "div"
        return f"{100 * r[key]:.1f}" if key == "test_acc" else f"{r[key]:.4g}"

    name_w = max(len("rule"), *(len(r) for r in rules))
    lines = [f"{label}, final epoch", f"{'rule':<{name_w}}" + "".join(f"{'w=' + str(w):>9}" for w in widths)]
    for rule in rules:
        lines.append(f"{rule:<{name_w}}" + "".join(f"{fmt(cell.get((rule, w))):>9}" for w in widths))
    return "\n".join(lines)


def plot_compare(rows: list[dict[str, Any]], path: Path) -> None:
    """Held-out accuracy (or loss) versus width, one line per rule, log2 width axis."""
    from matplotlib.figure import Figure  # no pyplot: no global backend is chosen or needed

    key, label = _metric(rows)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for rule in dict.fromkeys(r["rule"] for r in rows):
        pts = sorted((r["width"], r[key]) for r in rows if r["rule"] == rule and r["status"] == "finished")
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, [100 * y for y in ys] if key == "test_acc" else ys, marker="o", label=rule)
    ax.set_xscale("log", base=2)
    widths = sorted({r["width"] for r in rows})
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()
    if key == "test_loss":
        ax.set_yscale("log")
    ax.set_xlabel("width (channels / hidden units)")
    ax.set_ylabel(label)
    lr = sorted({r["lr"] for r in rows})
    ax.set_title(f"held-out performance vs width (lr {', '.join(map(str, lr))})")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
