"""The "did you mean" wording shared by every unknown-name error."""

from __future__ import annotations

from widealign.suggest import close_names, did_you_mean, suggestion

KNOWN = ["align-ada", "align-zero", "align-prop", "bp"]


def test_a_close_name_is_suggested():
    assert did_you_mean("rule", "alig-ada", KNOWN) == "unknown rule 'alig-ada'; did you mean align-ada?"


def test_without_a_close_name_every_name_is_listed():
    listed = "unknown rule 'qqq'; choose one of align-ada, align-zero, align-prop, bp"
    assert did_you_mean("rule", "qqq", KNOWN) == listed


def test_several_close_names_best_first():
    assert suggestion("align", KNOWN).startswith("did you mean align-")
    assert suggestion("align", KNOWN).count(",") == 1 and " or " in suggestion("align", KNOWN)


def test_case_and_separator_are_forgiven_first():
    assert close_names("Align_Ada", KNOWN)[0] == "align-ada"


def test_no_suggestion_for_a_name_that_is_not_a_string():
    assert suggestion(3, KNOWN) == ""
    assert did_you_mean("rule", None, ["bp"]) == "unknown rule None; choose one of bp"
