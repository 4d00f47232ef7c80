"""Unknown names get the closest known ones, and the misleading messages say what is wrong."""

from __future__ import annotations

import re

import pytest

from widealign.cli.main import main


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--rule", "alig-ada"], "unknown rule 'alig-ada'; did you mean align-ada?"),
        (["compare", "--rules", "bp", "fa", "dfaa"], "unknown rule 'dfaa'; did you mean dfa or fa?"),
        (["bench", "--rules", "kolen-polack"], "unknown rule 'kolen-polack'; did you mean kolen-pollack?"),
        (["run", "width", "--smoke", "--dry-run", "--rule", "alig-ada"], "did you mean align-ada?"),
        (["train", "--dataset", "kmnst"], "unknown dataset 'kmnst'; did you mean kmnist or mnist?"),
        (["run", "width", "--smoke", "--dry-run", "--dataset", "cifar"], "did you mean cifar10?"),
        (["train", "--model", "convent"], "unknown model 'convent' (did you mean convnet"),
        (["train", "--model", "resnet19"], "unknown model 'resnet19' (did you mean resnet18"),
        (["run", "widht"], "unknown experiment family 'widht' (did you mean width?)"),
        (["train", "--variant", "refrence"], "unknown variant 'refrence' for bp; did you mean reference?"),
        (["trian"], "invalid choice: 'trian'; did you mean train?"),
        (
            ["train", "--rule", "dfa", "--rule-option", "modles=2"],
            "dfa has no option 'modles' (did you mean modules or bp_modules?); its options:",
        ),
        (
            ["run", "width", "--smoke", "--dry-run", "--set", "optimiser=adam"],
            "unknown configuration key(s) optimiser (did you mean optimizer?)",
        ),
        (
            [
                "run",
                "width",
                "--smoke",
                "--dry-run",
                "--set",
                "rule_options={iteratons=3}",
                "--rule",
                "activation-relaxation",
            ],
            "activation-relaxation has no option 'iteratons' (did you mean iterations?)",
        ),  # fmt: skip
    ],
)
def test_an_unknown_name_suggests_the_closest(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["train", "--model", "convnet", "--dataset", "add"], r"'add' is a sequence task .* needs the rnn"),
        (["train", "--model", "resnet18", "--width", "8"], r"width 8 does not apply to resnet18"),
        (["train", "--model", "resnet18", "--width", "64"], r"width 64 does not apply to resnet18.*--width"),
        (["compare", "--model", "resnet18", "--widths", "8"], r"width 8 does not apply.*--widths"),
        (["run", "two-routes", "--smoke", "--dry-run", "--widths", "8"], r"width 8 does not apply to resnet"),
    ],
)
def test_misleading_messages_say_what_is_wrong(argv, pattern, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(pattern, err), err


def test_dry_run_checks_every_run_before_listing_any(capsys):
    assert main(["run", "width", "--smoke", "--dry-run", "--rules", "bp", "alig-ada"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "did you mean align-ada?" in err
