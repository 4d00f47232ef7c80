"""Plotting plumbing for the report: picking rows, grouping them into lines, drawing, saving.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, so no global backend
state and nothing to close; the Agg canvas renders PNG and the PDF backend PDF). A point is the
mean over the finished runs that share its line and x value; where every run at a point diverged
the point is missing (the line breaks there) and an ``x`` on the bottom edge marks it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, NullLocator

from widealign.report.collect import finite

Row = dict[str, Any]
LineKey = tuple[tuple[str, Any], ...]

#: Config keys that never split runs into separate lines (seeds are averaged; devices are alike).
NOT_GROUPING = frozenset({"seed", "device", "compile"})
#: Data sets whose metric is a loss (the paper's Add task); all others are classification.
REGRESSION_DATASETS = frozenset({"add"})
DIVERGED_LABEL = "all runs diverged"


def config_of(row: Row) -> dict[str, Any]:
    """The row's flattened config (empty for rows made elsewhere than :func:`collect`)."""
    return row.get("_config") or {}


def is_regression(row: Row) -> bool:
    return config_of(row).get("dataset") in REGRESSION_DATASETS


def distinct(rows: Iterable[Row], key: str) -> list[float]:
    """The distinct finite numeric values of ``key``, sorted."""
    return sorted({v for v in (finite(r.get(key)) for r in rows) if v is not None})


def _sortable(value: Any) -> tuple[int, float, str]:
    number = finite(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def varying(rows: Sequence[Row], exclude: Iterable[str] = ()) -> list[str]:
    """Config keys (other than ``exclude`` and :data:`NOT_GROUPING`) whose values differ across rows."""
    skip = set(exclude) | NOT_GROUPING
    keys = dict.fromkeys(k for r in rows for k in config_of(r) if k not in skip)
    return [k for k in keys if len({_text(config_of(r).get(k)) for r in rows}) > 1]


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _determined(rows: Sequence[Row], keys: Sequence[str], key: str) -> bool:
    """Whether ``keys``' values fix ``key``'s value in every row (e.g. the dataset fixes its model)."""
    seen: dict[str, str] = {}
    for r in rows:
        c = config_of(r)
        given = _text([c.get(k) for k in keys])
        if seen.setdefault(given, _text(c.get(key))) != _text(c.get(key)):
            return False
    return True


def line_keys(
    rows: Sequence[Row], lead: Sequence[str], exclude: Iterable[str] = ()
) -> Callable[[Row], LineKey]:
    """A function giving a row's line: the ``lead`` keys plus the other varying config keys.

    A varying key whose value is already fixed by the keys before it (the data set's default model,
    preset and batch size) is left out, so legends name only what tells lines apart.
    """
    keys = list(lead)
    for key in varying(rows, set(exclude) | set(lead)):
        if not _determined(rows, keys, key):
            keys.append(key)
    return lambda row: tuple((k, config_of(row).get(k)) for k in keys)


def label(key: LineKey) -> str:
    """``bp, train_size=45``: a rule is named bare, every other setting as ``name=value``."""
    return ", ".join(str(v) if k == "rule" else f"{k}={v:g}" if finite(v) is not None else f"{k}={v}"
                     for k, v in key) or "all runs"  # fmt: skip


def order(key: LineKey) -> list[tuple[str, tuple[int, float, str]]]:
    """Sort key of a line: numbers numerically, other values by their text."""
    return [(k, _sortable(v)) for k, v in key]


def sort_keys(keys: Iterable[LineKey]) -> list[LineKey]:
    """The distinct line keys, in :func:`order`."""
    return sorted(set(keys), key=order)


@dataclass
class Series:
    """One line: x values, y values (NaN where missing) and the x values where every run diverged."""

    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    diverged: list[float] = field(default_factory=list)


def series(
    rows: Sequence[Row], x: str, y: Callable[[Row], float | None], line: Callable[[Row], LineKey]
) -> dict[LineKey, Series]:
    """Group rows into lines and x values; each point is the mean of its finished runs' ``y``."""
    points: dict[LineKey, dict[float, list[Row]]] = {}
    for row in rows:
        xv = finite(row.get(x))
        if xv is not None:
            points.setdefault(line(row), {}).setdefault(xv, []).append(row)
    result = {}
    for key in sort_keys(points):
        s = Series()
        for xv in sorted(points[key]):
            group = points[key][xv]
            values = [v for v in (y(r) for r in group if r.get("status") == "finished") if v is not None]
            s.xs.append(xv)
            s.ys.append(sum(values) / len(values) if values else math.nan)
            if not values and any(r.get("status") == "diverged" for r in group):
                s.diverged.append(xv)
        result[key] = s
    return result


def metric(name: str, scale: float = 1.0) -> Callable[[Row], float | None]:
    """Reads a finite number from a row (times ``scale``), None when missing or not finite."""

    def read(row: Row) -> float | None:
        value = finite(row.get(name))
        return None if value is None else value * scale

    return read


def palette(keys: Sequence[Any]) -> dict[Any, Any]:
    """A fixed colour per key (so a rule has the same colour in every panel)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def new_figure(
    panels: int, max_cols: int = 3, size: tuple[float, float] = (4.0, 3.2)
) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``panels`` axes on a grid (unused grid cells hidden)."""
    cols = max(1, min(panels, max_cols))
    rows = max(1, math.ceil(panels / cols))
    fig = Figure(figsize=(size[0] * cols + 1.8, size[1] * rows + 0.4), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def draw(ax: Axes, s: Series, color: Any, linestyle: str = "-", marker: str = "o") -> None:
    """One line, with an ``x`` on the bottom edge at each all-diverged point."""
    ax.plot(s.xs, s.ys, color=color, linestyle=linestyle, marker=marker, markersize=4)
    if s.diverged:
        ax.plot(s.diverged, [0.03] * len(s.diverged), linestyle="none", marker="x", color=color,
                transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip


def has_positive(ax: Axes) -> bool:
    """Whether the axes hold any finite positive y value (a log y axis needs one)."""
    return any(
        finite(y) is not None and y > 0 for line in ax.get_lines() if line.get_transform() == ax.transData
        for y in line.get_ydata()
    )  # fmt: skip


class _PlainLog(LogFormatter):
    """Log-axis tick labels written plainly (``0.09``, ``20``) rather than as powers of ten."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def style(
    ax: Axes,
    xlabel: str,
    ylabel: str,
    title: str = "",
    xlog: int | None = None,
    ylog: bool = False,
    xticks: Sequence[float] = (),
) -> None:
    """Labels, title, grid and log scales (``xlog`` is the base, 2 for widths, 10 otherwise).

    ``xticks`` (the x values the runs used) become the only x ticks, labelled plainly (8, 16, 0.5).
    """
    if xlog:
        ax.set_xscale("log", base=xlog)
    if xticks:
        ax.set_xticks(list(xticks), [f"{x:g}" for x in xticks])
        ax.xaxis.set_minor_locator(NullLocator())
        if len(xticks) > 6:
            ax.tick_params(axis="x", labelsize=8)
    if ylog and has_positive(ax):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PlainLog())
        ax.yaxis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both" if ylog else "major")


def legend(fig: Figure, entries: dict[str, dict[str, Any]], diverged: bool, title: str | None = None) -> None:
    """A figure legend outside on the right: one entry per name, plus the diverged marker if used."""
    handles = [Line2D([], [], label=name, **kw) for name, kw in entries.items()]
    if diverged:
        handles.append(Line2D([], [], color="gray", marker="x", linestyle="none", label=DIVERGED_LABEL))
    if handles:
        fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=8, title=title,
                   title_fontsize=8)  # fmt: skip


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into ``out_dir``; returns both paths."""
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    return paths
