"""Importing and plotting with widealign leaves matplotlib's backend alone (a notebook keeps its own).

Each check runs in a fresh interpreter with ``MPLBACKEND=svg`` (not Agg, so a module that chose
Agg on import, as the comparison module once did, changes what ``matplotlib.get_backend()``
says); it imports the report and plotting modules, draws a comparison figure, and prints the
backend.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
import matplotlib
import widealign.report, widealign.report.plotting, widealign.report.figures
import widealign.sweeps.compare, widealign.studies.song2021_plots
from widealign.sweeps.compare import plot_compare
rows = [dict(rule="bp", width=w, lr=1.0, status="finished", test_acc=0.5 + w / 100, test_loss=1.0)
        for w in (8, 16)]
plot_compare(rows, sys.argv[1] + "/compare.png")
print(matplotlib.get_backend())
"""


def test_importing_and_plotting_keeps_the_configured_backend(tmp_path):
    env = os.environ | {"MPLBACKEND": "svg", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().lower() == "svg"
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_no_module_calls_matplotlib_use():
    """The library never picks a backend; only the command line may (it plots to files)."""
    import widealign

    root = os.path.dirname(widealign.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and "matplotlib.use(" in open(path, encoding="utf-8").read():
                offenders.append(os.path.relpath(path, root))
    assert offenders == []
