"""A rule defined outside the package trains like a packaged one: from the CLI (``--rule
module:Class``), a TOML family (batched where it can), ``compare``, Python (``register_rule``) and an
installed package's entry point; it resumes from its checkpoint to the uninterrupted numbers."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap

import pytest
import torch

import widealign
from widealign.cli.main import main
from widealign.rules import RULES, get_rule, make_rule, register_rule
from widealign.runs import RunConfig, train_run
from widealign.storage import load_checkpoint

MODULE = "widealign_user_rules_for_tests"
SPEC = f"{MODULE}:ShrinkingFA"
SOURCE = '''
"""A user's rule: fa whose feedback shrinks by (1 - rate) after every step."""
import torch
from widealign.rules.fa import FeedbackAlignment


class ShrinkingFA(FeedbackAlignment):
    """fa with feedback B <- (1 - rate) B after every step."""

    name = "shrinking-fa"

    def __init__(self, model, loss="mse", seed=0, rate=0.1):
        super().__init__(model, loss, seed)
        self.rate = float(rate)

    def _backward(self, x, y):
        loss, output = super()._backward(x, y)
        with torch.no_grad():
            for b in self.feedback:
                b.mul_(1 - self.rate)
        return loss, output


class NotARule:
    name = "nope"
'''
SMALL = ["--dataset", "digits", "--model", "mlp", "--width", "8", "--train-size", "100", "--dtype", "float64"]
CFG = dict(dataset="digits", model="mlp", width=8, train_size=100, dtype="float64", epochs=2)


@pytest.fixture
def user_module(tmp_path, monkeypatch, rule_registry):
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield rule_registry
    sys.modules.pop(MODULE, None)


def numbers(result: dict) -> list[tuple]:
    return [(e["train_loss"], e["test_loss"], e["test_acc"]) for e in result["epochs"]]


def feedback(folder) -> list[torch.Tensor]:
    rule = load_checkpoint(folder / "checkpoint.pt")["rule"]
    return [rule[k] for k in sorted(rule) if k.startswith("feedback_")]


def test_an_import_path_resolves_to_the_class_and_is_not_registered(user_module):
    cls = get_rule(SPEC)
    assert cls.__name__ == "ShrinkingFA" and SPEC in RULES and RULES[SPEC] is cls
    assert "shrinking-fa" not in RULES and SPEC not in list(RULES)
    with pytest.raises(ValueError, match=f"rule '{MODULE}:NotARule' is not a widealign Rule subclass"):
        get_rule(f"{MODULE}:NotARule")
    with pytest.raises(ValueError, match=f"cannot import rule '{MODULE}:Gone': module .* has no 'Gone'"):
        get_rule(f"{MODULE}:Gone")
    with pytest.raises(ValueError, match="cannot import rule 'no_such_module:X': No module named"):
        make_rule("no_such_module:X", widealign.MLP(4, 2, [3]))
    assert "no_such_module:X" not in RULES


def test_the_cli_trains_it_and_resumes_it_to_the_uninterrupted_numbers(user_module, tmp_path, capsys):
    flags = ["train", "--rule", SPEC, "--rule-option", "rate=0.2", "--epochs", "2", *SMALL, "--no-progress"]
    assert main([*flags, "--out", str(tmp_path / "straight")]) == 0
    straight = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert straight["status"] == "finished" and straight["config"]["rule"] == SPEC
    assert straight["config"]["rule_options"] == {"rate": 0.2}

    def interrupt(record):
        if record.epoch == 1:
            raise KeyboardInterrupt

    cfg = RunConfig(rule=SPEC, rule_options={"rate": 0.2}, **CFG)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "resumed", progress=False, on_epoch=interrupt)
    sys.modules.pop(MODULE)  # the resumed run imports the rule again, from the recorded path
    assert main([*flags, "--out", str(tmp_path / "resumed")]) == 0
    resumed = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert resumed["resumed_from_epoch"] == 1 and numbers(resumed) == numbers(straight)
    for a, b in zip(feedback(tmp_path / "resumed"), feedback(tmp_path / "straight"), strict=True):
        assert torch.equal(a, b)
    # The feedback really shrank: (1 - 0.2) per step, from fa's draw of the same seed.
    fa = make_rule("fa", widealign.MLP(64, 10, [8, 8], seed=0).double())
    steps = 2 * 1  # 2 epochs of one 100-example batch
    torch.testing.assert_close(feedback(tmp_path / "straight")[0], fa.feedback[0] * 0.8**steps)


def test_a_family_file_sweeps_it_batched_and_each_member_equals_its_separate_run(
    user_module, tmp_path, capsys
):
    family = tmp_path / "mine.toml"
    family.write_text(
        textwrap.dedent(f"""
        name = "mine"
        version = 1
        description = "a rule of one's own against fa"
        kind = "train"

        [base]
        dataset = "digits"
        model = "mlp"
        width = 8
        epochs = 1
        train_size = 100
        dtype = "float64"
        rule = "{SPEC}"
        rule_options = {{ rate = 0.3 }}

        [[sweep]]
        seed = [0, 1]
        """)
    )
    assert main(["run", str(family), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "2 runs: 2 finished" in capsys.readouterr().out
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*/result.json"))]
    assert [r["config"]["rule"] for r in results] == [SPEC, SPEC]
    assert all(r.get("batch_runs") == 2 for r in results)  # batchable (inherited from fa): one batched run
    for r in results:
        alone = train_run(RunConfig(**r["config"]), progress=False)
        torch.testing.assert_close(torch.tensor(numbers(alone)), torch.tensor(numbers(r)), rtol=1e-10, atol=0)


def test_compare_takes_an_import_path(user_module, tmp_path, capsys):
    out = tmp_path / "compare"
    args = ["compare", "--rules", "fa", SPEC, "--widths", "8", "--epochs", "1", *SMALL, "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    rules = [json.loads(p.read_text())["config"]["rule"] for p in sorted(out.glob("runs/*/result.json"))]
    assert sorted(rules) == sorted(["fa", SPEC])


def test_registered_from_python_it_trains_by_its_name(user_module):
    module = __import__(MODULE)
    cls = register_rule(module.ShrinkingFA)
    assert cls is module.ShrinkingFA and RULES["shrinking-fa"] is cls and "shrinking-fa" in list(RULES)
    assert widealign.register_rule is register_rule
    by_name = train_run(RunConfig(rule="shrinking-fa", rule_options={"rate": 0.2}, **CFG), progress=False)
    by_path = train_run(RunConfig(rule=SPEC, rule_options={"rate": 0.2}, **CFG), progress=False)
    assert numbers(by_name) == numbers(by_path)
    fa = train_run(RunConfig(rule="fa", **CFG), progress=False)
    assert numbers(fa)[0] == numbers(by_name)[0] and numbers(fa)[1] != numbers(by_name)[1]
    assert register_rule(module.ShrinkingFA) is cls  # the same class again: allowed (a re-run cell)


def test_registering_badly_is_a_one_line_error(rule_registry):
    class Unnamed(widealign.Rule):
        """No name."""

    with pytest.raises(ValueError, match="must set a class attribute name"):
        register_rule(Unnamed)
    with pytest.raises(ValueError, match="is not a widealign Rule subclass"):
        register_rule(int)

    class Clash(widealign.Rule):
        """Takes fa's name."""

        name = "fa"

    with pytest.raises(ValueError, match=r"a rule named 'fa' is already registered \(widealign.rules.fa"):
        register_rule(Clash)
    assert RULES["fa"].__module__ == "widealign.rules.fa"


def test_every_packaged_rule_is_registered_by_its_module():
    """One list: each packaged rule class is in RULES under its name, registered by the decorator."""
    import inspect
    import pkgutil

    import widealign.rules as package

    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"widealign.rules.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, widealign.Rule) and cls.__module__ == module.__name__ and "name" in vars(cls):
                assert RULES[cls.name] is cls, cls


def fake_entry_points(monkeypatch, *pairs: tuple[str, str]) -> None:
    eps = [importlib.metadata.EntryPoint(n, v, "widealign.rules") for n, v in pairs]
    real = importlib.metadata.entry_points

    def entry_points(**kw):
        return eps if kw.get("group") == "widealign.rules" else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_an_installed_packages_entry_point_is_listed_and_trains(user_module, monkeypatch, tmp_path, capsys):
    user_module._entry_points_loaded = False
    fake_entry_points(monkeypatch, ("shrinking-fa", SPEC), ("broken", f"{MODULE}:NotARule"))
    with pytest.warns(UserWarning, match="skipping rule entry point 'broken'"):
        assert main(["rules"]) == 0
    out = capsys.readouterr().out
    assert "shrinking-fa" in out and "options: rate=0.1" in out and "broken" not in out.split("options")[0]
    args = ["train", "--rule", "shrinking-fa", "--epochs", "1", *SMALL, "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config"]["rule"] == "shrinking-fa"


def test_a_broken_entry_point_is_skipped_with_a_warning(user_module, monkeypatch):
    user_module._entry_points_loaded = False
    fake_entry_points(monkeypatch, ("broken", f"{MODULE}:NotARule"), ("other-name", SPEC))
    with pytest.warns(UserWarning) as caught:
        names = list(RULES)
    messages = sorted(str(w.message) for w in caught)
    assert "skipping rule entry point 'broken'" in messages[0] and "not a widealign Rule" in messages[0]
    assert "'other-name'" in messages[1] and "must be its rule's name" in messages[1]
    assert "nope" not in names and "shrinking-fa" not in names and "fa" in names


def test_an_unknown_rule_on_the_command_line_is_one_line(capsys):
    assert main(["train", "--rule", "no_such_module:Rule", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import rule 'no_such_module:Rule'" in err
