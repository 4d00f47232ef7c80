"""The README's examples of the entry points a user adopts widealign through, run as written.

Every code block preceded by ``<!-- runs in tests/test_readme.py -->`` runs here, in order, in one
temporary folder: Python blocks are executed, a TOML block is written to the file its first comment
names, and each line of a bash block is a ``widealign`` command that must exit with status 0.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from widealign.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- runs in tests/test_readme.py -->"


def marked_blocks() -> list[tuple[str, str]]:
    pattern = re.escape(MARK) + r"\n```(\w+)\n(.*?)\n```"
    return re.findall(pattern, README.read_text(), flags=re.DOTALL)


def test_the_readme_marks_its_entry_point_examples():
    kinds = [kind for kind, _ in marked_blocks()]
    assert kinds.count("python") >= 1 and kinds.count("toml") == 1 and kinds.count("bash") >= 2
    assert README.read_text().count(MARK) == len(kinds)  # every mark is followed by a block


def test_the_readme_examples_run(tmp_path, monkeypatch):
    if any("--tensorboard" in code for _, code in marked_blocks()):
        pytest.importorskip("tensorboard", reason="the README's --tensorboard example needs the extra")
    monkeypatch.chdir(tmp_path)
    for kind, code in marked_blocks():
        if kind == "python":
            exec(compile(code, "README.md", "exec"), {})
        elif kind == "toml":
            name = code.splitlines()[0].removeprefix("#").strip()
            Path(name).write_text(code)
        else:
            for line in code.splitlines():
                argv = shlex.split(line, comments=True)
                assert argv[0] == "widealign", line
                try:
                    status = main([*argv[1:], "--no-progress"] if argv[1] in ("run", "train") else argv[1:])
                except SystemExit as stop:  # --version
                    status = stop.code
                assert status == 0, line
    assert Path("results/my-family/results.csv").exists()
    assert Path("results/mine/metrics.csv").exists() and list(Path("runs/mine").iterdir())
    assert len(list(Path("results/my-lr").glob("*/result.json"))) == 8  # widths x lrs x seeds
    assert list(Path("results/my-slurm/slurm").iterdir())


def test_the_readme_stays_short_and_its_python_example_is_the_guides():
    """The README is the front door (at most 250 lines; the rest is in docs/), and its Python
    example, run above, is the one docs/python.md shows, so that the guide's copy is tested too."""
    assert len(README.read_text().splitlines()) <= 250
    guide = (README.parent / "docs" / "python.md").read_text()
    assert all(code in guide for kind, code in marked_blocks() if kind == "python")


def test_the_readme_family_table_is_the_catalogue():
    """One row per packaged family with what its file says it reproduces and its run counts."""
    from widealign.sweeps.catalogue import family_names, load_family

    rows = re.findall(r"^\| `([\w-]+)` \| (.*?) \| (\d+) \| (\d+) \|$", README.read_text(), flags=re.M)
    assert sorted(name for name, *_ in rows) == family_names()
    for name, reproduces, runs, smoke in rows:
        family = load_family(name)
        assert reproduces == family.reproduces
        assert (int(runs), int(smoke)) == (len(family.tasks()), len(family.smoke_version().tasks()))
