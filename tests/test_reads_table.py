"""scripts/reads_table.py: docs/method.md's table of what each rule reads is made from the rules'
declarations (which tests/testing/test_transport.py holds to what the check finds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from widealign.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reads_table", ROOT / "scripts" / "reads_table.py")
reads_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reads_table)


def test_docs_method_md_has_the_table_the_declarations_give(capsys):
    assert reads_table.main(["--check"]) == 0, capsys.readouterr().err


def test_the_table_has_a_row_per_rule_with_its_declaration():
    table = reads_table.table_block()
    for name in RULES:
        cls = RULES[name]
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"| {cls.reads} |" in row
        for setting, reads in cls.reads_settings:
            assert f"{reads} with `{setting}`" in row


def test_check_fails_on_a_difference_and_writing_puts_the_table_between_the_markers(tmp_path, capsys):
    page = tmp_path / "method.md"
    page.write_text(f"# x\n\nbefore\n\n{reads_table.BEGIN}\n| old | table |\n{reads_table.END}\n\nafter\n")
    assert reads_table.main(["--page", str(page), "--check"]) == 1
    assert "old | table" in page.read_text()  # --check writes nothing
    assert "differs" in capsys.readouterr().err
    assert reads_table.main(["--page", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert reads_table.table_block() in text
    assert reads_table.main(["--page", str(page), "--check"]) == 0
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="lacks the reads table markers"):
        reads_table.main(["--page", str(page)])
