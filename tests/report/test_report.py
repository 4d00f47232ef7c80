"""The report: collecting result.json trees into a table and drawing the figures they support.

All but the last test use synthetic (but well-formed) result records; nothing is trained.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from widealign.report import FIGURES, collect, make_figures, report, write_table
from widealign.runs import RunConfig, train_run
from widealign.runs.run import environment, write_json_atomic
from widealign.studies.alignment import alignment_config

ENV = environment(torch.device("cpu"))


def epochs(n=3, acc=0.5, loss=1.0, seconds=2.0, **extra):
    """``n`` synthetic epochs whose accuracy rises and loss falls, plus per-epoch ``extra`` values."""
    rows = []
    for k in range(n):
        row = dict(epoch=k + 1, train_loss=loss / (k + 1), train_acc=acc + 0.01 * k, test_loss=loss / (k + 1),
                   test_acc=acc + 0.01 * k, seconds=seconds)  # fmt: skip
        rows.append(row | {key: f(k) for key, f in extra.items()})
    return rows


def write(root, name, config, epoch_list, status="finished", kind=None):
    record = {"status": status, "config": config, "seed": config["seed"], **ENV, "epochs": epoch_list,
              "wall_seconds": sum(e["seconds"] for e in epoch_list),
              "error": "training diverged: loss is nan" if status == "diverged" else None}  # fmt: skip
    if kind is not None:
        record = {"kind": kind} | record
    write_json_atomic(record, root / name / "result.json")


def train_cfg(**fields):
    return RunConfig(**fields).resolved().as_dict()


def build_tree(root):
    """One folder per experiment family, covering every figure."""
    for rule in ("bp", "fa"):
        for lr in (1.0, 5.0):
            for width in (8, 16, 32):
                cfg = train_cfg(rule=rule, width=width, lr=lr)
                if (rule, width, lr) == ("fa", 32, 5.0):
                    write(root / "grid", f"{rule}-lr{lr}-w{width}", cfg, [], status="diverged")
                else:
                    write(
                        root / "grid", f"{rule}-lr{lr}-w{width}", cfg, epochs(acc=width / 100, seconds=width)
                    )
    for n in (45, 150, 450):
        write(root / "lowdata", f"n{n}", train_cfg(width=8, train_size=n), epochs(acc=n / 1000))
    for width in (8, 16):
        history = epochs(loss=10 / width, train_eval_loss=lambda k, w=width: 20 / w + (k - 1) ** 2)
        write(root / "add", f"w{width}", train_cfg(dataset="add", width=width), history)
    for seed in (100, 101, 102):
        write(
            root / "seeds", f"s{seed}", train_cfg(width=16, lr=2.0, seed=seed), epochs(acc=0.7 + seed / 1000)
        )
    for width in (8, 16, 32):
        cfg = alignment_config(dict(mode="score", width=width, draws=3)).as_dict()
        per_layer = {f"align/{i}": (lambda k, i=i: 0.9 - 0.1 * i - 0.01 * k) for i in range(2)}
        per_layer |= {f"align_shuffled/{i}": (lambda k: 0.2) for i in range(2)}
        write(root / "align-score", f"w{width}", cfg, epochs(**per_layer), kind="alignment")
    for rule in ("fa", "align-prop"):
        for width in (8, 16):
            cfg = alignment_config(dict(mode="update", rule=rule, width=width)).as_dict()
            per_layer = {f"cos_bp/{i}": (lambda k, i=i: 0.1 * i) for i in range(2)}
            per_layer |= {f"dist_init/{i}": (lambda k, w=width: 1 / w) for i in range(2)}
            write(root / "align-update", f"{rule}-w{width}", cfg, epochs(**per_layer), kind="alignment")


def by_path(rows):
    return {r["path"]: r for r in rows}


def test_collect_flattens_config_and_summarises_epochs(tmp_path):
    cfg = train_cfg(rule="fa", width=8, strides=[1, 2, 2])
    history = epochs(n=3)
    history[1]["test_acc"], history[1]["test_loss"] = 0.9, 0.1  # best in the middle
    history[2]["train_loss"] = math.nan  # ignored by best, kept as final
    write(tmp_path, "a", cfg, history)
    (row,) = collect(tmp_path)
    assert row["path"] == "a" and row["kind"] == "train" and row["status"] == "finished"
    assert row["rule"] == "fa" and row["width"] == 8 and row["lr"] == 5.0 and row["strides"] == "[1, 2, 2]"
    assert row["widealign_version"] == ENV["widealign_version"] and row["run_device"] == "cpu"
    assert row["n_epochs"] == 3 and row["seed"] == 0
    assert row["final_test_acc"] == history[2]["test_acc"] and row["best_test_acc"] == 0.9
    assert row["final_test_loss"] == history[2]["test_loss"] and row["best_test_loss"] == 0.1
    assert math.isnan(row["final_train_loss"]) and row["best_train_loss"] == history[1]["train_loss"]
    assert row["seconds_per_epoch"] == 2.0 and row["wall_seconds"] == 6.0


def test_add_best_train_loss_is_the_minimum_of_the_re_evaluated_training_loss(tmp_path):
    """The paper's best train loss: min over epochs of the whole training set evaluated after each."""
    build_tree(tmp_path)
    rows = by_path(collect(tmp_path / "add"))
    row = rows["w8"]
    assert row["best_train_eval_loss"] == 20 / 8 and row["final_train_eval_loss"] == 20 / 8 + 1
    assert row["best_train_loss"] == pytest.approx(10 / 8 / 3) and "train_eval_loss" not in row
    fig = FIGURES["add_loss_vs_width"](list(rows.values()))
    train_panel, test_panel = fig.axes[:2]
    assert "train" in train_panel.get_title() and "held-out" in test_panel.get_title()
    (line,) = [ln for ln in train_panel.get_lines() if len(ln.get_xdata()) == 2]
    assert list(line.get_xdata()) == [8, 16] and list(line.get_ydata()) == [20 / 8, 20 / 16]


def test_alignment_rows_hold_final_per_layer_values_and_their_means(tmp_path):
    build_tree(tmp_path)
    rows = by_path(collect(tmp_path))
    score = rows["align-score/w16"]
    assert score["kind"] == "alignment" and score["mode"] == "score" and score["draws"] == 3
    assert score["align/0"] == pytest.approx(0.88) and score["align/1"] == pytest.approx(0.78)
    assert score["align/mean"] == pytest.approx(0.83) and score["align_shuffled/mean"] == pytest.approx(0.2)
    update = rows["align-update/fa-w16"]
    assert update["cos_bp/mean"] == pytest.approx(0.05) and update["dist_init/mean"] == pytest.approx(1 / 16)


def test_table_has_one_row_per_run_and_counts_diverged(tmp_path):
    build_tree(tmp_path)
    rows = collect(tmp_path)
    path = write_table(rows, tmp_path / "out")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 12 + 3 + 2 + 3 + 3 + 4
    assert not any(column.startswith("_") for column in table[0])
    assert [r["status"] for r in table].count("diverged") == 1
    diverged = next(r for r in table if r["status"] == "diverged")
    assert diverged["path"] == "grid/fa-lr5.0-w32" and diverged["n_epochs"] == "0"
    assert diverged["final_test_acc"] == "" and "diverged" in diverged["error"]
    columns = list(table[0])
    assert columns.index("align/0") < columns.index("align/1") < columns.index("align/mean")
    finished = next(r for r in table if r["path"] == "grid/bp-lr1.0-w8")
    assert float(finished["best_test_acc"]) == pytest.approx(0.10) and finished["kind"] == "train"


def test_report_draws_every_figure_as_png_and_pdf(tmp_path):
    build_tree(tmp_path)
    result = report(tmp_path, tmp_path / "report")
    names = {p.name for p in result["figures"]}
    assert names == {f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    assert all(p.stat().st_size > 1000 for p in result["figures"])
    assert result["table"] == tmp_path / "report" / "results.csv"
    assert result["counts"] == {"finished": 26, "diverged": 1} and result["runs"] == 27


@pytest.mark.parametrize(
    "family,expected",
    [
        ("grid", {"accuracy_vs_width", "accuracy_vs_lr", "seconds_per_epoch_vs_width"}),
        ("lowdata", {"accuracy_vs_train_size"}),
        ("add", {"add_loss_vs_width", "seconds_per_epoch_vs_width"}),
        ("seeds", {"seed_spread"}),
        ("align-score", {"alignment_vs_width", "alignment_vs_epoch"}),
        ("align-update", {"cos_bp_vs_width", "dist_init_vs_width"}),
    ],
)
def test_a_family_folder_gets_only_the_figures_it_has_data_for(tmp_path, family, expected):
    build_tree(tmp_path)
    paths = make_figures(collect(tmp_path / family), tmp_path / "out")
    assert {p.stem for p in paths} == expected


def test_runs_that_all_diverged_or_cannot_be_read_do_not_break_the_figures(tmp_path):
    for width in (8, 16):
        write(tmp_path, f"w{width}", train_cfg(width=width), epochs(n=1), status="diverged")
        cfg = alignment_config(dict(mode="score", width=width)).as_dict()
        write(tmp_path, f"a{width}", cfg, [], status="diverged", kind="alignment")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{not json")
    result = report(tmp_path)
    assert result["counts"] == {"diverged": 4, "unreadable": 1}
    assert {p.stem for p in result["figures"]} >= {"accuracy_vs_width", "alignment_vs_width"}


def test_an_empty_or_missing_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no result.json"):
        report(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        collect(tmp_path / "nope")


def test_report_on_real_runs(tmp_path):
    for width in (4, 8):
        cfg = RunConfig(rule="bp", width=width, epochs=1, train_size=200)
        train_run(cfg, tmp_path / "runs" / f"bp-w{width}", progress=False)
    result = report(tmp_path)
    rows = by_path(collect(tmp_path))
    assert set(rows) == {"runs/bp-w4", "runs/bp-w8"}
    assert rows["runs/bp-w4"]["n_epochs"] == 1 and rows["runs/bp-w4"]["train_size"] == 200
    assert 0 <= rows["runs/bp-w8"]["final_test_acc"] <= 1
    assert {p.name for p in result["figures"]} == {
        f"{n}.{e}" for n in ("accuracy_vs_width", "seconds_per_epoch_vs_width") for e in ("png", "pdf")
    }
    assert (tmp_path / "results.csv").stat().st_size > 0


@pytest.mark.parametrize("text", ["{}", "[]", "NaN", '{"config": [], "status": "finished", "epochs": []}'])
def test_a_result_that_is_not_a_record_is_listed_as_unreadable_and_the_rest_reported(tmp_path, text, capsys):
    from widealign.cli.main import main

    build_tree(tmp_path)
    (tmp_path / "grid" / "broken").mkdir()
    (tmp_path / "grid" / "broken" / "result.json").write_text(text)
    result = report(tmp_path / "grid")
    assert result["counts"] == {"diverged": 1, "finished": 11, "unreadable": 1}
    [(path, reason)] = result["unreadable"]
    assert path == "broken" and reason.startswith(
        f"{tmp_path}/grid/broken/result.json is not a result record ("
    )
    assert {p.stem for p in result["figures"]} >= {"accuracy_vs_width"}
    assert main(["report", str(tmp_path / "grid")]) == 0
    printed = capsys.readouterr().out
    assert "13 runs (1 diverged, 11 finished, 1 unreadable)" in printed
    assert f"unreadable: broken: {reason}\n" in printed


def test_alignment_vs_epoch_draws_the_longest_run_of_each_width_and_data_set(tmp_path):
    """The alignment family scores width 512 for 150 and 300 epochs, on two data sets."""
    for dataset, n in (("digits", 3), ("digits", 6), ("kmnist", 4)):
        cfg = alignment_config(dict(mode="score", width=512, dataset=dataset, epochs=n, draws=3)).as_dict()
        per_layer = {"align/0": lambda k: 0.5, "align_shuffled/0": lambda k: 0.1}
        write(tmp_path, f"{dataset}-{n}", cfg, epochs(n=n, **per_layer), kind="alignment")
    fig = FIGURES["alignment_vs_epoch"](collect(tmp_path))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2 and all(t.startswith("width 512") for t in titles)
    drawn = sorted(len(ax.get_lines()[0].get_xdata()) for ax in fig.axes if ax.get_title())
    assert drawn == [4, 6]
