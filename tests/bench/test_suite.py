"""`widealign bench` in one run: every section's figures, and its pieces on the meta device."""

from __future__ import annotations

import json

import pytest

from widealign.bench.suite import bench_suite, format_relaxation, relaxation_rules
from widealign.cli.main import main


def test_suite_returns_every_section_with_its_figures():
    out = bench_suite(
        sections=["steps", "batched", "relaxation"], widths=[2], rules=["bp", "align-zero"],
        input_shape=(1, 6, 6), batch_size=4, repeats=1, members=2, relaxation_repeats=1,
    )  # fmt: skip
    assert {"machine", "steps", "batched", "relaxation"} <= set(out)
    assert [r["rule"] for r in out["steps"]] == ["bp", "align-zero", "bare"]
    assert [r["rule"] for r in out["batched"]] == ["bp", "align-zero"]
    assert all(r["speedup"] > 0 for r in out["batched"])
    assert sorted(r["rule"] for r in out["relaxation"]) == sorted(relaxation_rules())
    assert all(r["iterations"] >= 1 and r["ratio_to_bp"] > 0 for r in out["relaxation"])
    assert "iterations" in format_relaxation(out["relaxation"])
    with pytest.raises(ValueError, match="unknown bench section 'nope'"):
        bench_suite(sections=["nope"])


def test_bench_runs_on_the_meta_device():
    """What the GPU check runs, with shapes only: every rule's step, the yardsticks and batched runs
    build and run on a device other than the CPU (autocast has no meta backend: it runs on the CPU)."""
    out = bench_suite(
        sections=["steps", "batched"], widths=[4], rules=["bp", "align-zero", "align-ada"],
        input_shape=(1, 8, 8), batch_size=4, repeats=1, members=2, device="meta",
    )  # fmt: skip
    assert [r["rule"] for r in out["steps"]] == ["bp", "align-zero", "align-ada", "bare"]
    assert len(out["batched"]) == 3
    bf16 = bench_suite(sections=["steps"], widths=[2], rules=["bp", "align-ada"], input_shape=(1, 6, 6),
                       batch_size=4, repeats=1, autocast="bf16")  # fmt: skip
    assert [r.get("autocast") for r in bf16["steps"]] == ["bf16", "bf16", None]


def test_bench_command_writes_one_json_with_the_command(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--widths", "2", "--rules", "bp", "--input-shape", "1", "6", "6", "--repeats", "1",
            "--batch-size", "4", "--members", "2", "--sections", "steps", "batched",
            "--json", str(path)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "bp / bare loop" in text and "speed-up" in text and "load average" in text
    out = json.loads(path.read_text())
    assert out["command"].startswith("widealign bench") and {"steps", "batched", "machine"} <= set(out)


def test_execution_section_times_the_native_norm_against_the_default():
    from widealign.bench.execution import bench_execution, format_execution

    rows = bench_execution(widths=[2], rules=["bp", "align-zero"], input_shape=(1, 6, 6), batch_size=4,
                           repeats=1, warmup=0, executions=["native-norm"])  # fmt: skip
    assert [(r["rule"], r["execution"]) for r in rows] == [
        ("bp", "default"),
        ("bp", "native-norm"),
        ("align-zero", "default"),
        ("align-zero", "native-norm"),
    ]
    assert all(r["seconds"] > 0 for r in rows)
    assert [r["ratio_to_default"] for r in rows][::2] == [1.0, 1.0]
    assert "native-norm" in format_execution(rows)
    with pytest.raises(ValueError, match="unknown execution 'fast'"):
        bench_execution(widths=[2], executions=["fast"])
