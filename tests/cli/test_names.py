"""The static index of names the command line starts from is what the live registries give."""

from __future__ import annotations

import difflib

from widealign.cli import names
from widealign.cli.main import main


def test_the_index_file_is_what_the_live_registries_give():
    live = names.index_text(names.build_index())
    shipped = names.INDEX_FILE.read_text(encoding="utf-8")
    diff = difflib.unified_diff(shipped.splitlines(True), live.splitlines(True), "names.json", "live")
    diff = "".join(diff)
    assert diff == "", f"run 'python -m widealign.cli.names' to update the index:\n{diff}"


def test_rules_lists_the_index_without_plugins(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert listed == list(names.index()["rules"])
    assert "variants: default, reference" in out and "options: iterations=" in out


def test_the_plugin_group_is_the_registrys():
    from widealign.rules.registry import ENTRY_POINT_GROUP

    assert names.ENTRY_POINT_GROUP == ENTRY_POINT_GROUP
