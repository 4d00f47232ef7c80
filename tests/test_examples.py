"""Every example in examples/ runs, for one tiny epoch, so that they stay true.

The scripts are loaded from their files and their ``main`` called with small settings; the
notebook runs in a Jupyter kernel with ``WIDEALIGN_EXAMPLE_EPOCHS=1`` and ``WIDEALIGN_EXAMPLE_WIDTH=8``,
and is checked to be saved with its outputs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "two_rules_on_digits.ipynb"


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


def test_the_notebook_runs_in_a_kernel_and_plots_two_rules(monkeypatch, tmp_path):
    """The notebook, executed cell by cell in a Jupyter kernel (as ``jupyter nbconvert
    --execute`` does) on small settings, trains both rules and shows one figure with a line each."""
    nbformat = pytest.importorskip("nbformat", reason="running the notebook needs the dev extra")
    nbclient = pytest.importorskip("nbclient", reason="running the notebook needs the dev extra")
    pytest.importorskip("ipykernel", reason="running the notebook needs the dev extra")
    monkeypatch.setenv("WIDEALIGN_EXAMPLE_EPOCHS", "1")  # the kernel inherits the environment
    monkeypatch.setenv("WIDEALIGN_EXAMPLE_WIDTH", "8")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    check = (
        "assert sorted(histories) == ['align-ada', 'bp'] and all(len(h) == 1 for h in histories.values())\n"
    )
    check += "assert [len(a.lines) for a in fig.axes] == [2]\nprint('checked')"
    notebook.cells.append(nbformat.v4.new_code_cell(check))
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    outputs = [cell.outputs for cell in notebook.cells if cell.cell_type == "code"]
    assert any("image/png" in out.get("data", {}) for out in outputs[-2])  # the plot cell shows the figure
    assert "after 1 epochs" in "".join(out.get("text", "") for out in outputs[-3])
    assert outputs[-1][0]["text"].strip() == "checked"


def test_the_notebook_is_saved_with_its_outputs_plot_included():
    """Saved after ``jupyter nbconvert --execute --inplace`` at its own settings, so that it reads
    as a finished notebook: every code cell ran, in order, without an error, and the plot is in it."""
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    outputs = [out for cell in code for out in cell["outputs"]]
    assert not any(out["output_type"] == "error" for out in outputs)
    assert all(cell["outputs"] for cell in code)  # each prints or shows something
    assert any("image/png" in out.get("data", {}) for out in code[-1]["outputs"])


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
