"""Resumable runs, result records, comparisons and the benchmark."""

from __future__ import annotations

import json

import pytest

import widealign
from widealign.bench.steps import bench
from widealign.runs import RunConfig, train_run
from widealign.sweeps.compare import format_table, run_compare

SMALL = dict(width=8, epochs=3, dtype="float64")


def test_result_records_config_versions_seed_and_epochs(tmp_path):
    result = train_run(RunConfig(rule="align-ada", **SMALL), tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert result["status"] == "finished"
    assert result["config"]["rule"] == "align-ada" and result["config"]["lr"] == 5.0
    assert result["widealign_version"] == widealign.__version__ and result["seed"] == 0
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3]
    assert set(result["epochs"][0]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "seconds"}


def test_interrupted_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    cfg = RunConfig(rule="fa", **SMALL)
    straight = train_run(cfg, tmp_path / "a", progress=False)

    def interrupt(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "b", progress=False, on_epoch=interrupt)
    assert json.loads((tmp_path / "b" / "result.json").read_text())["status"] == "running"
    resumed = train_run(cfg, tmp_path / "b", progress=False)
    assert resumed["resumed_from_epoch"] == 2

    def numbers(r):
        return [(e["train_loss"], e["test_loss"], e["test_acc"]) for e in r["epochs"]]

    assert numbers(resumed) == numbers(straight)
    again = train_run(cfg, tmp_path / "b", progress=False)  # finished: returned, not retrained
    assert again["session_seconds"] == resumed["session_seconds"]


def test_a_folder_holding_another_configuration_is_refused(tmp_path):
    train_run(RunConfig(rule="bp", **SMALL), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train_run(RunConfig(rule="fa", **SMALL), tmp_path, progress=False)


def test_divergence_is_recorded_not_raised(tmp_path):
    result = train_run(RunConfig(rule="bp", lr=1e30, width=8, epochs=3), tmp_path, progress=False)
    assert result["status"] == "diverged" and "diverged" in result["error"]


def test_add_task_trains_the_rnn_with_the_sequence_loss():
    result = train_run(
        RunConfig(rule="align-zero", dataset="add", width=8, epochs=2, lr=1e-3), progress=False
    )
    assert result["config"]["model"] == "rnn" and result["epochs"][-1]["test_acc"] is None
    assert 1 < result["epochs"][0]["test_loss"] < 100


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(rule="nope"), "unknown rule"),
        (dict(width=0), "width must be a positive integer"),
        (dict(lr=float("nan")), "learning rate"),
        (dict(width=[4, 4], strides=[1, 2, 2]), "2 widths given"),
        (dict(dataset="cifar100"), "unknown dataset"),
        (dict(variant="authors"), "unknown variant"),
        (dict(autocast="fp16"), "unknown autocast 'fp16'; choose one of bf16 or none"),
        (dict(device="cuda:7"), "CUDA is not available|unknown device"),
    ],
)
def test_bad_configurations_fail_before_training(fields, match):
    cfg = RunConfig(**{**SMALL, **fields})
    with pytest.raises(ValueError, match=match):
        if fields.get("device"):
            train_run(cfg, progress=False)
        cfg.resolved()


def test_compare_writes_table_csv_and_plot(tmp_path):
    base = RunConfig(epochs=1, dtype="float64")
    rows = run_compare(base, ["bp", "readout"], [4, 8], tmp_path, progress=False)
    assert [(r["rule"], r["width"]) for r in rows] == [("bp", 4), ("readout", 4), ("bp", 8), ("readout", 8)]
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert len((tmp_path / "compare.csv").read_text().splitlines()) == 5
    table = format_table(rows)
    assert "w=4" in table and "readout" in table
    assert (tmp_path / "runs" / "bp-w8" / "result.json").exists()


def test_bench_reports_every_rule_with_bp_as_the_unit():
    rows = bench(widths=[4], input_shape=(1, 8, 8), batch_size=10, repeats=2, warmup=1)
    assert {r["rule"] for r in rows} == set(widealign.RULES) | {"bare"}
    assert next(r for r in rows if r["rule"] == "bp")["ratio_to_bp"] == 1.0
    assert all(r["seconds"] > 0 for r in rows)


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("rule", ["bp", "align-ada", "fa", "dfa"])
def test_gpu_run_matches_the_cpu_run(rule):
    """Data held on the training device; the numbers agree with the CPU's up to float tolerance."""
    cfg = RunConfig(rule=rule, width=8, epochs=2, dtype="float64", train_size=300)
    cpu = train_run(cfg, progress=False)
    gpu = train_run(RunConfig(**{**cfg.as_dict(), "device": "cuda"}), progress=False)
    for a, b in zip(cpu["epochs"], gpu["epochs"]):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_reference_variant_is_recorded_and_selects_the_authors_rule(tmp_path):
    """``variant`` reaches the rule where the rule has one, and result.json records it."""
    cfg = RunConfig(**{**SMALL, "rule": "align-ada", "variant": "reference", "epochs": 1}).resolved()
    assert cfg.rule_variant == "reference"
    assert RunConfig(**{**SMALL, "rule": "bp", "variant": "reference"}).resolved().rule_variant == "default"
    result = train_run(cfg, tmp_path / "run", progress=False)
    assert result["config"]["variant"] == "reference"


def test_rule_options_reach_the_rule_and_the_record(tmp_path):
    cfg = RunConfig(rule="activation-relaxation", model="mlp", rule_options={"iterations": "3"}, **SMALL)
    result = train_run(cfg, tmp_path, progress=False)
    assert result["status"] == "finished" and result["config"]["rule_options"] == {"iterations": 3}


def test_compare_gives_each_rule_only_the_options_it_takes(tmp_path):
    base = RunConfig(epochs=1, dtype="float64", model="mlp", rule_options={"iterations": 2})
    rows = run_compare(base, ["bp", "predictive-coding"], [4], tmp_path, progress=False)
    configs = [
        json.loads((tmp_path / "runs" / f"{r}-w4" / "result.json").read_text())["config"]
        for r in ("bp", "predictive-coding")
    ]
    assert [c["rule_options"] for c in configs] == [{}, {"iterations": 2}] and len(rows) == 2


@pytest.mark.parametrize("n,batch", [(45, 45), (150, 50), (450, 50), (1500, 100), (4500, 100), (45000, 100)])
def test_low_data_runs_use_the_authors_batch_size(n, batch):
    """N below 100 trains one batch of N; otherwise gcd(100, N), so N = 150 is 3 batches of 50."""
    assert RunConfig(dataset="cifar10", train_size=n).resolved().batch_size == batch
    assert RunConfig(dataset="cifar10", train_size=n, batch_size=64).resolved().batch_size == 64
    resolved = RunConfig(dataset="cifar10", train_size=n).resolved()
    assert RunConfig(**resolved.as_dict()).resolved() == resolved


def test_a_low_data_run_trains_equal_batches_of_the_first_examples(monkeypatch):
    from widealign.data import Dataset

    sizes = []
    real = Dataset.train_batches

    def spy(self, batch_size, generator):
        for xb, yb in real(self, batch_size, generator):
            sizes.append(len(xb))
            yield xb, yb

    monkeypatch.setattr(Dataset, "train_batches", spy)
    result = train_run(RunConfig(rule="bp", width=4, epochs=1, train_size=150), progress=False)
    assert sizes == [50, 50, 50] and result["config"]["batch_size"] == 50


def test_holdout_is_a_configuration_key_for_the_torchvision_sets_only():
    assert RunConfig(dataset="kmnist", holdout=300).resolved().holdout == 300
    with pytest.raises(ValueError, match="holdout applies to mnist, kmnist, cifar10"):
        RunConfig(holdout=300).resolved()
    with pytest.raises(ValueError, match="holdout must be a non-negative integer"):
        RunConfig(dataset="kmnist", holdout=-1).resolved()


def test_autocast_is_recorded_and_a_folder_from_before_the_field_still_matches(tmp_path):
    """``autocast`` is part of the record; a result written without the field (before it existed)
    is the same run as ``autocast=None`` (run_identity leaves a default-valued added field out),
    and not the same run as ``autocast="bf16"``."""
    cfg = RunConfig(rule="bp", **{**SMALL, "epochs": 2, "dtype": "float32"})
    result = train_run(cfg, tmp_path, progress=False)
    assert result["config"]["autocast"] is None
    record = json.loads((tmp_path / "result.json").read_text())
    del record["config"]["autocast"], record["digest"], record["checkpoint_sha256"]  # an older record
    (tmp_path / "result.json").write_text(json.dumps(record))
    again = train_run(cfg, tmp_path, progress=False)
    assert again.get("already_complete") and again["epochs"] == result["epochs"]
    with pytest.raises(ValueError, match="different configuration.*autocast"):
        train_run(RunConfig(**{**cfg.as_dict(), "autocast": "bf16"}), tmp_path, progress=False)
    bf16 = train_run(RunConfig(**{**cfg.as_dict(), "autocast": "bf16"}), tmp_path / "bf16", progress=False)
    assert bf16["config"]["autocast"] == "bf16"
    assert bf16["epochs"][-1]["test_loss"] != result["epochs"][-1]["test_loss"]
