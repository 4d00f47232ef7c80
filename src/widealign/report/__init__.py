"""The ``report`` stage: every ``result.json`` under a folder into one table and the paper's figures.

>>> paths = report("results/kmnist")      # results.csv and *.png/*.pdf next to the runs
>>> rows = collect("results")             # or step by step: rows, then table and figures
>>> write_table(rows, "out"); make_figures(rows, "out")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from widealign.report.collect import TABLE_FILE, collect, record_row, status_counts, write_table
from widealign.report.figures import FIGURES, make_figures
from widealign.runs.run import SWEEP_FILE


def report(
    results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, latest_sweep: bool = False
) -> dict[str, Any]:
    """Collect the runs under ``results_dir``, write ``results.csv`` and every figure they support.

    ``out_dir`` defaults to ``results_dir``; ``latest_sweep`` keeps only the runs that the folder's
    ``sweep.json`` (written by the last ``widealign run`` into it) lists. Returns ``{"table": Path,
    "figures": [Path, ...], "runs": int, "counts": {status: n}, "unreadable": [(path, reason)]}``.
    A folder without any ``result.json`` is an error, so a mistyped path is not mistaken for an
    empty report.
    """
    rows = collect(results_dir, sweep_runs(results_dir) if latest_sweep else None)
    if not rows:
        raise ValueError(f"no result.json found under {str(results_dir)!r}")
    out = Path(results_dir if out_dir is None else out_dir)
    table = write_table(rows, out)
    figures = make_figures(rows, out)
    songs = song2021_records(rows)
    if songs:
        from widealign.studies.song2021_plots import plot_song2021

        figures += plot_song2021(songs, out)
    unreadable = [(row["path"], row["error"]) for row in rows if row["status"] == "unreadable"]
    return {
        "table": table,
        "figures": figures,
        "runs": len(rows),
        "counts": status_counts(rows),
        "unreadable": unreadable,
    }


def sweep_runs(results_dir: str | os.PathLike) -> set[str]:
    """The run ids that ``results_dir/sweep.json`` lists (the latest sweep run into the folder)."""
    path = Path(results_dir) / SWEEP_FILE
    try:
        manifest = json.loads(path.read_text())
        return {str(run["run_id"]) for run in manifest["runs"]}
    except FileNotFoundError as err:
        raise ValueError(f"{path} not found: {results_dir} was not written by widealign run") from err
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise ValueError(f"{path} is not a sweep manifest ({type(err).__name__}: {err})") from err


def song2021_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The full curves of the finished Song et al. runs among ``rows`` (for their own figures)."""
    return [
        row["_record"]["song"]
        for row in rows
        if row.get("kind") == "song2021" and row.get("status") == "finished"
    ]


__all__ = [
    "FIGURES",
    "TABLE_FILE",
    "collect",
    "make_figures",
    "record_row",
    "report",
    "status_counts",
    "write_table",
]
