"""scripts/demo_table.py: the README's demo table is the one ``widealign compare`` printed.

The script reads the ``compare.csv`` that ``make demo`` writes; the table it puts in the README must
be the table the demo printed from the same runs (the CSV loses nothing that matters), and
``--check`` must fail when the README's table differs. ``make demo-check`` (a step of .ci/run)
applies the check to a fresh run of the demo.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from widealign.cli.common import PAPER_RULES
from widealign.sweeps.compare import format_table, write_csv

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("demo_table", ROOT / "scripts" / "demo_table.py")
demo_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_table)


def rows() -> list[dict]:
    """Summary rows as ``run_compare`` returns them (one diverged run, one with a long rule name)."""
    out = []
    for i, rule in enumerate(["bp", "align-ada", "information-alignment"]):
        for j, width in enumerate([16, 64, 256]):
            diverged = rule == "align-ada" and width == 64
            acc = None if diverged else (17 * i + 5 * j + 1) / 97
            out.append({
                "rule": rule, "width": width, "lr": 5.0, "seed": 0,
                "status": "diverged" if diverged else "finished",
                "test_acc": acc, "test_loss": 0.5 / (i + j + 1), "train_loss": 0.25,
                "seconds_per_epoch": 1.0 + i,
            })  # fmt: skip
    return out


def test_the_table_from_the_csv_is_the_table_the_demo_printed(tmp_path):
    write_csv(rows(), tmp_path / "compare.csv")
    from_csv = demo_table.read_rows(tmp_path / "compare.csv")
    assert format_table(from_csv) == format_table(rows())
    assert "div" in format_table(from_csv).splitlines()[3]  # align-ada's diverged run


def test_the_script_writes_the_table_between_the_markers_and_check_fails_on_a_difference(tmp_path, capsys):
    csv = tmp_path / "compare.csv"
    write_csv(rows(), csv)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# x\n\nbefore\n\n{demo_table.BEGIN}\n```\nold table\n```\n{demo_table.END}\n\nafter\n"
    )
    argv = ["--csv", str(csv), "--readme", str(readme)]
    assert demo_table.main([*argv, "--check"]) == 1
    assert "old table" in readme.read_text()  # --check writes nothing
    assert demo_table.main(argv) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert f"```\n{format_table(rows())}\n```" in text
    assert demo_table.main([*argv, "--check"]) == 0
    changed = rows()
    changed[0]["test_acc"] += 0.001  # one cell moves by 0.1 points
    write_csv(changed, csv)
    assert demo_table.main([*argv, "--check"]) == 1
    assert "differs" in capsys.readouterr().err


def test_a_readme_without_markers_or_a_missing_csv_is_refused(tmp_path):
    write_csv(rows(), tmp_path / "compare.csv")
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(ValueError, match="lacks the demo table markers"):
        demo_table.main(["--csv", str(tmp_path / "compare.csv"), "--readme", str(tmp_path / "README.md")])
    assert (
        demo_table.main(["--csv", str(tmp_path / "none.csv"), "--readme", str(tmp_path / "README.md")]) == 2
    )


def test_the_readme_has_one_demo_table_in_the_format_of_the_demo():
    text = (ROOT / "README.md").read_text()
    assert text.count(demo_table.BEGIN) == 1 and text.count(demo_table.END) == 1
    block = text[text.index(demo_table.BEGIN) : text.index(demo_table.END) + len(demo_table.END)]
    lines = block.splitlines()[2:-2]
    assert lines[0] == "held-out accuracy (%), final epoch"
    assert lines[1].split() == ["rule", "w=16", "w=64", "w=256"]
    assert [line.split()[0] for line in lines[2:]] == list(PAPER_RULES)  # make demo runs these
