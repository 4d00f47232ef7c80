"""Figures of the Song, Xu & Lafferty reproduction from :func:`run_song2021` records.

Every plot groups the records by the configuration fields that vary among them (the seed aside)
and averages over seeds: loss curves by their geometric mean (the mean of ``log L``), cosines by
their arithmetic mean, with the seeds' min..max as a band. The fitted exponential rate in the
loss legend is the seeds' mean of :func:`~widealign.studies.song2021.decay_rate` (``-slope``
of ``log L`` against the step over the second half of training, before the machine-precision
plateau). Each figure is saved as PNG and PDF.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from widealign.studies.song2021 import decay_rate

_SHORT = {"width": "p", "lam": "λ", "activation": "ψ", "rule": "", "eta": "η", "data": "", "n": "n"}
_SKIP = ("seed", "record_every", "dtype")

Record = dict[str, Any]


def varying_keys(records: Sequence[Record], exclude: Iterable[str] = ()) -> list[str]:
    """Config fields that take more than one value among ``records`` (seed and bookkeeping aside)."""
    skip = set(_SKIP) | set(exclude)
    keys = records[0]["config"].keys()
    return [k for k in keys if k not in skip and len({str(r["config"][k]) for r in records}) > 1]


def group_records(records: Sequence[Record], keys: Sequence[str]) -> dict[tuple, list[Record]]:
    """Records grouped by their values of ``keys``, sorted by those values (legend order)."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[tuple(r["config"][k] for k in keys)].append(r)
    try:
        return dict(sorted(groups.items()))
    except TypeError:  # values of mixed types (e.g. None and numbers): keep first-seen order
        return dict(groups)


def _label(keys: Sequence[str], values: tuple) -> str:
    parts = [f"{_SHORT.get(k, k)}={v}" if _SHORT.get(k, k) else str(v) for k, v in zip(keys, values)]
    return ", ".join(parts) or "all runs"


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def _style(keys: Sequence[str], values: tuple, index: int) -> dict[str, Any]:
    style: dict[str, Any] = {"color": f"C{index % 10}"}
    if "rule" in keys and values[list(keys).index("rule")] == "bp":
        style["linestyle"] = "--"
    return style


def plot_loss_curves(records: Sequence[Record], stem: str | Path) -> list[Path]:
    """Training loss vs step (log axis), one line per configuration, fitted rate in the legend."""
    keys = varying_keys(records)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for i, (values, group) in enumerate(group_records(records, keys).items()):
        steps = np.asarray(group[0]["steps"])
        log_loss = np.mean([np.log(r["loss"]) for r in group], axis=0)
        rate = float(np.mean([decay_rate(r) for r in group]))
        label = f"{_label(keys, values)} (rate {rate:.2e}/step)"
        ax.plot(steps, np.exp(log_loss), label=label, **_style(keys, values, i))
    ax.set_yscale("log")
    ax.set_xlabel("full-batch step t")
    ax.set_ylabel("training loss ½ Σᵢ (f(xᵢ) − yᵢ)²")
    ax.set_title("Training loss (geometric mean over seeds)")
    ax.legend(fontsize=7)
    return _save(fig, Path(stem))


def plot_cosine_curves(records: Sequence[Record], stem: str | Path) -> list[Path]:
    """cos(beta, b) vs step, one line per configuration (e.g. per lambda), seeds' range shaded."""
    keys = varying_keys(records)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for i, (values, group) in enumerate(group_records(records, keys).items()):
        steps = np.asarray(group[0]["steps"])
        cos = np.asarray([r["cosine"] for r in group])
        style = _style(keys, values, i)
        ax.plot(steps, cos.mean(0), label=_label(keys, values), **style)
        ax.fill_between(steps, cos.min(0), cos.max(0), color=style["color"], alpha=0.2, linewidth=0)
    ax.set_xlabel("full-batch step t")
    ax.set_ylabel("cos(β, b)")
    ax.set_title("Alignment of β with the feedback vector b")
    ax.legend(fontsize=7)
    return _save(fig, Path(stem))


def _final_cosine_axes(records: Sequence[Record], x_key: str) -> tuple[Figure, Axes]:
    keys = varying_keys(records, exclude=(x_key,))
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for i, (values, group) in enumerate(group_records(records, keys).items()):
        by_x = group_records(group, [x_key])
        xs = np.asarray([v[0] for v in by_x])
        finals = [np.asarray([r["final_cosine"] for r in rs]) for rs in by_x.values()]
        mean = np.asarray([f.mean() for f in finals])
        low = mean - np.asarray([f.min() for f in finals])
        high = np.asarray([f.max() for f in finals]) - mean
        err = np.stack([low, high])
        order = np.argsort(xs)
        style = _style(keys, values, i) | {"marker": "o", "capsize": 3, "label": _label(keys, values)}
        ax.errorbar(xs[order], mean[order], yerr=err[:, order], **style)
    return fig, ax


def plot_final_cosine_vs_lambda(records: Sequence[Record], stem: str | Path) -> list[Path]:
    """Final cos(beta, b) against lambda (symlog axis, so lambda = 0 shows), mean and seed range."""
    fig, ax = _final_cosine_axes(records, "lam")
    lams = sorted({r["config"]["lam"] for r in records})
    positive = [v for v in lams if v > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlabel("weight decay λ on β")
    ax.set_ylabel("final cos(β, b)")
    ax.set_title("Final alignment vs regularisation")
    ax.legend(fontsize=7)
    return _save(fig, Path(stem))


def plot_final_cosine_vs_width(records: Sequence[Record], stem: str | Path) -> list[Path]:
    """Final cos(beta, b) against the width p (log axis), one line per lambda (and other fields)."""
    fig, ax = _final_cosine_axes(records, "width")
    ax.set_xscale("log")
    ax.set_xlabel("width p")
    ax.set_ylabel("final cos(β, b)")
    ax.set_title("Final alignment vs width")
    ax.legend(fontsize=7)
    return _save(fig, Path(stem))


def plot_song2021(records: Sequence[Record], out_dir: str | Path) -> list[Path]:
    """All four figures of a sweep into ``out_dir``; returns the files written.

    Loss curves use the lambda = 0 runs (fa and bp, every p); cosine curves the fa runs at the most
    frequent width (one line per lambda); the final cosine plots need several lambdas and several
    widths respectively and are skipped otherwise.
    """
    out = Path(out_dir)
    fa = [r for r in records if r["config"]["rule"] == "fa"] or list(records)
    unregularised = [r for r in records if r["config"]["lam"] == 0] or list(records)
    widths = [r["config"]["width"] for r in fa]
    common = max(set(widths), key=widths.count)
    paths = plot_loss_curves(unregularised, out / "song2021_loss")
    paths += plot_cosine_curves([r for r in fa if r["config"]["width"] == common], out / "song2021_cosine")
    if len({r["config"]["lam"] for r in fa}) > 1:
        paths += plot_final_cosine_vs_lambda(fa, out / "song2021_cosine_vs_lambda")
    if len({r["config"]["width"] for r in fa}) > 1:
        paths += plot_final_cosine_vs_width(fa, out / "song2021_cosine_vs_width")
    return paths
