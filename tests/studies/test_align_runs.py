"""The alignment score of saved runs (widealign align)."""

from __future__ import annotations

import pytest

from widealign.cli.main import main
from widealign.runs import RunConfig, train_run
from widealign.studies.align_runs import align_runs
from widealign.studies.alignment import run_alignment

SMALL = dict(width=8, epochs=2, dtype="float64", train_size=200)


def test_two_identical_runs_align_perfectly_and_others_less(tmp_path):
    for name, rule in (("a", "bp"), ("b", "bp"), ("c", "align-zero")):
        train_run(RunConfig(rule=rule, **SMALL), tmp_path / name, progress=False)
    same = align_runs(tmp_path / "a", tmp_path / "b", draws=5, noise_batch=10)
    assert len(same) == 4
    assert all(s.score == pytest.approx(1.0, abs=1e-9) for s in same)
    other = align_runs(tmp_path / "a", tmp_path / "c", draws=5, noise_batch=10)
    assert all(-1 <= s.score <= 1 for s in other) and any(s.score < 1 - 1e-6 for s in other)
    assert any(s.shuffled < s.score for s in other)


def test_runs_from_different_initialisations_are_refused(tmp_path):
    train_run(RunConfig(rule="bp", **SMALL), tmp_path / "a", progress=False)
    train_run(RunConfig(rule="bp", **{**SMALL, "seed": 1}), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="differ in seed"):
        align_runs(tmp_path / "a", tmp_path / "b")


def test_a_score_run_is_scored_from_its_checkpoint(tmp_path, capsys):
    config = {"mode": "score", "width": 8, "epochs": 1, "train_size": 200, "draws": 5, "dtype": "float64"}
    record = run_alignment(config, tmp_path / "score", progress=False)
    scores = align_runs(tmp_path / "score", draws=5, noise_batch=10)
    assert len(scores) == sum(k.startswith("align/") for k in record["epochs"][-1])
    assert main(["align", str(tmp_path / "score"), "--draws", "3"]) == 0
    assert "shuffled" in capsys.readouterr().out


def test_align_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["align", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run folder" in err
