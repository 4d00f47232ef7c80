"""The report's figures, each drawn only when the collected rows hold the data it needs.

=====================================  =======================================================
file (``.png`` and ``.pdf``)           what
=====================================  =======================================================
``accuracy_vs_width``                  final held-out accuracy vs width per rule, a panel per lr
``accuracy_vs_lr``                     final held-out accuracy vs lr, a panel per rule, a line
                                       per width
``accuracy_vs_train_size``             final held-out accuracy vs training-set size per rule
``add_loss_vs_width``                  Add task: best train loss (the training set re-evaluated
                                       after each epoch) and best held-out loss vs width per rule
``seconds_per_epoch_vs_width``         training seconds per epoch vs width per rule (log-log)
``seed_spread``                        seed mean +/- std and every seed, per rule and setting
``alignment_vs_width``                 alignment score per layer vs width, shuffled control
                                       dashed (score mode, final epoch)
``alignment_vs_epoch``                 alignment score per layer vs epoch with control, a panel
                                       per width (lowest seed)
``cos_bp_vs_width``                    cosine of rule update and bp gradient (mean over layers)
                                       vs width per rule (update mode, final epoch)
``dist_init_vs_width``                 relative distance from initialisation (mean over layers)
                                       vs width per rule (log-log)
=====================================  =======================================================

Figures 1-6 use ``train`` runs, 7-10 ``alignment`` runs. Any other setting that varies among the
rows of a figure (optimiser, data set, ...) splits lines further and is named in the legend.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from widealign.report.collect import LAYER_KEY, finite
from widealign.report.plotting import (
    Row,
    config_of,
    distinct,
    draw,
    is_regression,
    label,
    legend,
    line_keys,
    metric,
    new_figure,
    order,
    palette,
    save,
    series,
    sort_keys,
    style,
    varying,
)

ACCURACY = metric("final_test_acc", 100.0)
WIDTH_LABEL = "width (channels / hidden units)"


def _train(rows: Sequence[Row], regression: bool | None = None) -> list[Row]:
    return [r for r in rows if r.get("kind", "train") == "train" and regression in (None, is_regression(r))]


def _alignment(rows: Sequence[Row], mode: str) -> list[Row]:
    return [r for r in rows if r.get("kind") == "alignment" and config_of(r).get("mode") == mode]


def _lines_figure(
    panels: list[tuple[str, list[Row]]],
    x: str,
    y: Callable[[Row], float | None] | Sequence[Callable[[Row], float | None]],
    line: Callable[[Row], tuple],
    labels: dict[str, str],
    xlog: int,
    ylog: bool = False,
) -> Figure:
    """Panels of lines of ``y`` (or of ``y[k]`` in panel ``k``) versus ``x``; ``labels`` holds
    xlabel, ylabel and title."""
    ys = list(y) if isinstance(y, Sequence) else [y] * len(panels)
    drawn = [(name, series(sub, x, read, line)) for (name, sub), read in zip(panels, ys)]
    keys = sort_keys(k for _, lines in drawn for k in lines)
    colors = palette(keys)
    ticks = distinct((r for _, sub in panels for r in sub), x)
    fig, axes = new_figure(len(drawn))
    for ax, (name, lines) in zip(axes, drawn):
        for key, s in lines.items():
            draw(ax, s, colors[key])
        style(ax, labels["xlabel"], labels["ylabel"], name, xlog=xlog, ylog=ylog, xticks=ticks)
    diverged = any(s.diverged for _, lines in drawn for s in lines.values())
    legend(fig, {label(k): {"color": colors[k], "marker": "o"} for k in keys}, diverged)
    fig.suptitle(labels["title"])
    return fig


def accuracy_vs_width(rows: Sequence[Row]) -> Figure | None:
    """(1) Final held-out accuracy versus width per rule, one panel per learning rate."""
    rows = _train(rows, regression=False)
    if len(distinct(rows, "width")) < 2:
        return None
    panels = [(f"lr = {lr:g}", [r for r in rows if finite(r.get("lr")) == lr]) for lr in distinct(rows, "lr")]
    labels = dict(
        xlabel=WIDTH_LABEL, ylabel="final held-out accuracy (%)", title="Held-out accuracy vs width"
    )
    return _lines_figure(panels, "width", ACCURACY, line_keys(rows, ["rule"], ["width", "lr"]), labels, 2)


def accuracy_vs_lr(rows: Sequence[Row]) -> Figure | None:
    """(2) Final held-out accuracy versus learning rate, one panel per rule, one line per width."""
    rows = _train(rows, regression=False)
    if len(distinct(rows, "lr")) < 2:
        return None
    rules = list(dict.fromkeys(sorted(str(r.get("rule")) for r in rows)))
    panels = [(rule, [r for r in rows if str(r.get("rule")) == rule]) for rule in rules]
    labels = dict(xlabel="learning rate", ylabel="final held-out accuracy (%)",
                  title="Held-out accuracy vs learning rate")  # fmt: skip
    return _lines_figure(panels, "lr", ACCURACY, line_keys(rows, ["width"], ["lr", "rule"]), labels, 10)


def accuracy_vs_train_size(rows: Sequence[Row]) -> Figure | None:
    """(3) Final held-out accuracy versus the number of training examples, per rule."""
    rows = [r for r in _train(rows, regression=False) if finite(r.get("train_size")) is not None]
    if len(distinct(rows, "train_size")) < 2:
        return None
    labels = dict(xlabel="training examples", ylabel="final held-out accuracy (%)",
                  title="Held-out accuracy vs training-set size")  # fmt: skip
    line = line_keys(rows, ["rule"], ["train_size"])
    return _lines_figure([("", rows)], "train_size", ACCURACY, line, labels, 10)


def add_loss_vs_width(rows: Sequence[Row]) -> Figure | None:
    """(4) Add task: best train loss and best held-out loss versus hidden size per rule (log-log).

    The train loss is the paper's: the whole training set evaluated after each epoch
    (``best_train_eval_loss``), not the running mean of the batch losses during the epoch.
    """
    rows = _train(rows, regression=True)
    if len(distinct(rows, "width")) < 2:
        return None
    panels = [("best train loss (re-evaluated after each epoch)", rows), ("best held-out loss", rows)]
    labels = dict(
        xlabel="hidden units", ylabel="loss", title="Add task: best train and held-out loss vs width"
    )
    line = line_keys(rows, ["rule"], ["width"])
    ys = [metric("best_train_eval_loss"), metric("best_test_loss")]
    return _lines_figure(panels, "width", ys, line, labels, 2, ylog=True)


def seconds_vs_width(rows: Sequence[Row]) -> Figure | None:
    """(5) Training seconds per epoch versus width per rule (log-log); lr and epochs do not split lines."""
    rows = [
        r for r in _train(rows) if finite(r.get("seconds_per_epoch")) is not None or r["status"] != "finished"
    ]
    if len(distinct(rows, "width")) < 2:
        return None
    labels = dict(xlabel=WIDTH_LABEL, ylabel="seconds per epoch", title="Training time per epoch vs width")
    line = line_keys(rows, ["rule"], ["width", "lr", "epochs"])
    return _lines_figure([("", rows)], "width", metric("seconds_per_epoch"), line, labels, 2, ylog=True)


def _seed_groups(rows: Sequence[Row]) -> list[list[Row]]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        rest = {k: v for k, v in config_of(r).items() if k not in ("seed", "device", "compile")}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(r)
    return [g for g in groups.values() if len({r.get("seed") for r in g}) >= 2]


def seed_spread(rows: Sequence[Row]) -> Figure | None:
    """(6) Per rule (and setting), the mean +/- std over seeds and every seed as a point."""
    groups = _seed_groups(_train(rows))
    if not groups:
        return None
    kinds = [
        ("final held-out accuracy (%)", ACCURACY, [g for g in groups if not is_regression(g[0])]),
        ("best held-out loss", metric("best_test_loss"), [g for g in groups if is_regression(g[0])]),
    ]
    kinds = [k for k in kinds if k[2]]
    width = max(4.0, 1.1 * max(len(k[2]) for k in kinds))
    fig, axes = new_figure(len(kinds), max_cols=2, size=(width, 3.6))
    for ax, (ylabel, read, subgroups) in zip(axes, kinds):
        _seed_panel(ax, subgroups, read)
        style(ax, "", ylabel)
    fig.suptitle("Seed spread: mean +/- std (bars) and individual seeds (points)")
    return fig


def _seed_panel(ax: Axes, groups: list[list[Row]], read: Callable[[Row], float | None]) -> None:
    line = line_keys([r for g in groups for r in g], ["rule"], [])
    groups = sorted(groups, key=lambda g: order(line(g[0])))
    colors = palette([label(line(g[0])) for g in groups])
    ticks = []
    for i, group in enumerate(groups):
        name = label(line(group[0]))
        values = [v for v in (read(r) for r in group if r.get("status") == "finished") if v is not None]
        ax.plot([i + d for d in _offsets(len(values))], values, "o", alpha=0.6, color=colors[name])
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            ax.errorbar([i], [statistics.fmean(values)], yerr=[std], fmt="_", color="black", markersize=18,
                        capsize=5)  # fmt: skip
        failed = sum(r.get("status") == "diverged" for r in group)
        ticks.append(f"{name}\n{len(values)} seeds" + (f", {failed} diverged" if failed else ""))
    ax.set_xticks(range(len(groups)), ticks, fontsize=8, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(groups) - 0.4)


def _offsets(n: int) -> list[float]:
    return [0.0] if n == 1 else [-0.15 + 0.3 * k / (n - 1) for k in range(n)]


def _layers(rows: Sequence[Row], name: str) -> list[int]:
    found = set()
    for r in rows:
        for e in r.get("_epochs") or [{}]:
            for key in list(e) + list(r):
                match = LAYER_KEY.match(key)
                if match and match["name"] == name and match["index"] != "mean":
                    found.add(int(match["index"]))
    return sorted(found)


def _layer_legend(layers: list[int]) -> tuple[dict, dict[str, dict]]:
    colors = palette(layers)
    entries = {f"layer {i}": {"color": colors[i]} for i in layers}
    entries |= {
        "alignment score": {"color": "black"},
        "shuffled control": {"color": "black", "linestyle": "--"},
    }
    return colors, entries


def alignment_vs_width(rows: Sequence[Row]) -> Figure | None:
    """(7) Final alignment score per layer versus width, the shuffled control dashed."""
    rows = _alignment(rows, "score")
    if len(distinct(rows, "width")) < 2:
        return None
    layers = _layers(rows, "align")
    colors, entries = _layer_legend(layers)
    split = line_keys(rows, [], ["width"])
    panels = {key: [r for r in rows if split(r) == key] for key in sort_keys(split(r) for r in rows)}
    fig, axes = new_figure(len(panels))
    diverged = False
    for ax, (key, sub) in zip(axes, panels.items()):
        for i in layers:
            for name, dash in ((f"align/{i}", "-"), (f"align_shuffled/{i}", "--")):
                for s in series(sub, "width", metric(name), lambda r: ()).values():
                    draw(ax, s, colors[i], dash)
                    diverged |= bool(s.diverged)
        style(
            ax, WIDTH_LABEL, "alignment score", label(key) if key else "", 2, xticks=distinct(rows, "width")
        )
    legend(fig, entries, diverged)
    fig.suptitle("Input-weight alignment (bp vs theory) vs width, final epoch")
    return fig


def alignment_vs_epoch(rows: Sequence[Row]) -> Figure | None:
    """(8) Alignment score per layer versus epoch with the control, a panel per width and data set
    (its longest run, then the lowest seed)."""
    rows = [r for r in _alignment(rows, "score") if r.get("_epochs")]
    if not any(len(r["_epochs"]) >= 2 for r in rows):
        return None
    chosen: dict[str, Row] = {}
    for r in sorted(rows, key=lambda r: (-len(r["_epochs"]), *_width_seed_path(r))):
        chosen.setdefault(f"{r.get('width')}, {config_of(r).get('dataset')}", r)
    chosen = dict(sorted(chosen.items(), key=lambda item: (_width_seed_path(item[1]), item[0])))
    layers = _layers(list(chosen.values()), "align")
    colors, entries = _layer_legend(layers)
    others = varying(list(chosen.values()), ["width"])
    fig, axes = new_figure(len(chosen), max_cols=4, size=(3.6, 3.0))
    for ax, r in zip(axes, chosen.values()):
        width = r.get("width")
        epochs = [e.get("epoch", k + 1) for k, e in enumerate(r["_epochs"])]
        for i in layers:
            for name, dash in ((f"align/{i}", "-"), (f"align_shuffled/{i}", "--")):
                ys = [finite(e.get(name)) for e in r["_epochs"]]
                ax.plot(epochs, [math.nan if y is None else y for y in ys], color=colors[i], linestyle=dash,
                        marker="o", markersize=3)  # fmt: skip
        extra = "".join(f", {k}={config_of(r).get(k)}" for k in others)
        status = "" if r.get("status") == "finished" else f" ({r.get('status')})"
        style(ax, "epoch", "alignment score", f"width {width}, seed {r.get('seed')}{extra}{status}")
    legend(fig, entries, False)
    fig.suptitle("Input-weight alignment (bp vs theory) during training")
    return fig


def _width_seed_path(row: Row) -> tuple:
    return order((("width", row.get("width")),)), finite(row.get("seed")) or 0.0, row.get("path", "")


def cos_bp_vs_width(rows: Sequence[Row]) -> Figure | None:
    """(9) Cosine between the rule's update and the bp gradient (mean over layers) versus width."""
    rows = _alignment(rows, "update")
    if len(distinct(rows, "width")) < 2:
        return None
    labels = dict(xlabel=WIDTH_LABEL, ylabel="cos(rule update, bp gradient)\nmean over layers",
                  title="Update alignment with backprop vs width, final epoch")  # fmt: skip
    line = line_keys(rows, ["rule"], ["width"])
    return _lines_figure([("", rows)], "width", metric("cos_bp/mean"), line, labels, 2)


def dist_init_vs_width(rows: Sequence[Row]) -> Figure | None:
    """(10) Relative distance from initialisation (mean over layers) versus width per rule (log-log)."""
    rows = _alignment(rows, "update")
    if len(distinct(rows, "width")) < 2:
        return None
    labels = dict(xlabel=WIDTH_LABEL, ylabel="|W(T) - W(0)| / |W(0)|\nmean over layers",
                  title="Distance from initialisation vs width, final epoch")  # fmt: skip
    line = line_keys(rows, ["rule"], ["width"])
    return _lines_figure([("", rows)], "width", metric("dist_init/mean"), line, labels, 2, ylog=True)


#: Every figure by file name, in the order of the report.
FIGURES: dict[str, Callable[[Sequence[Row]], Figure | None]] = {
    "accuracy_vs_width": accuracy_vs_width,
    "accuracy_vs_lr": accuracy_vs_lr,
    "accuracy_vs_train_size": accuracy_vs_train_size,
    "add_loss_vs_width": add_loss_vs_width,
    "seconds_per_epoch_vs_width": seconds_vs_width,
    "seed_spread": seed_spread,
    "alignment_vs_width": alignment_vs_width,
    "alignment_vs_epoch": alignment_vs_epoch,
    "cos_bp_vs_width": cos_bp_vs_width,
    "dist_init_vs_width": dist_init_vs_width,
}


def make_figures(rows: Sequence[Row], out_dir: str | os.PathLike) -> list[Path]:
    """Draw every figure the rows have data for into ``out_dir`` as PNG and PDF; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for name, build in FIGURES.items():
        fig = build(rows)
        if fig is not None:
            paths += save(fig, out, name)
    return paths
