"""Every example in examples/ runs, for one tiny epoch, so that they stay true.

The scripts are loaded from their files and their ``main`` called with small settings; the
notebook's code cells are executed in order in one namespace (as a kernel would), with
``WIDEALIGN_EXAMPLE_EPOCHS=1``, ``WIDEALIGN_EXAMPLE_WIDTH=8`` and matplotlib's non-interactive backend.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plain_pytorch_loop_trains_over_a_dataloader(capsys):
    accuracy = load("pytorch_loop").main(["--epochs", "1", "--width", "8", "--rule", "align-zero"])
    assert 0 <= accuracy <= 1
    assert "epoch 1: last batch loss" in capsys.readouterr().out


def test_the_lightning_module_trains_with_manual_optimisation():
    pytest.importorskip("lightning", reason="the lightning extra is not installed here")
    metrics = load("lightning_module").main(["--epochs", "1", "--width", "8", "--rule", "fa"])
    assert {"train_loss", "val_acc"} <= set(metrics)
    assert 0 < metrics["train_loss"] < 1 and 0 <= metrics["val_acc"] <= 1


def test_the_notebook_trains_two_rules_and_plots_them(monkeypatch):
    monkeypatch.setenv("WIDEALIGN_EXAMPLE_EPOCHS", "1")
    monkeypatch.setenv("WIDEALIGN_EXAMPLE_WIDTH", "8")
    matplotlib.use("Agg")
    notebook = json.loads((EXAMPLES / "two_rules_on_digits.ipynb").read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for source in cells:
        exec(compile(source, "two_rules_on_digits.ipynb", "exec"), namespace)
    assert sorted(namespace["histories"]) == ["align-ada", "bp"]
    assert all(len(h) == 1 and h[0].test_acc is not None for h in namespace["histories"].values())
    (figure,) = [namespace["fig"]]
    assert len(figure.axes[0].lines) == 2
    matplotlib.pyplot.close("all")


def test_the_rule_of_ones_own_passes_the_checks_and_trains(rule_registry, capsys):
    accuracy = load("decaying_fa").main(["--epochs", "1", "--width", "8"])
    assert 0 <= accuracy <= 1
    out = capsys.readouterr().out
    assert "ok decaying-fa: batched members equal their separate runs" in out
    assert "decaying-fa: held-out accuracy" in out


def test_the_rule_in_docs_add_a_rule_is_the_example_file():
    """The doc's worked example is the code the test above runs, verbatim."""
    doc = (EXAMPLES.parent / "docs" / "add-a-rule.md").read_text()
    block = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert "class DecayingFA" in block and block in (EXAMPLES / "decaying_fa.py").read_text()
