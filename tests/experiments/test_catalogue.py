"""The experiment catalogue: every family loads, validates and expands as its file says."""

from __future__ import annotations

import pytest

from widealign.experiments.catalogue import Family, family_names, load_family, parse_override
from widealign.experiments.runners import validate

FAMILIES = ["width", "lr-sweep", "adam", "low-data", "align-prop", "seeds", "timing", "imagenet", "add"]


def test_the_catalogue_has_every_family_of_spec_section_5():
    assert set(FAMILIES) <= set(family_names())


@pytest.mark.parametrize("name", family_names())
def test_full_and_smoke_versions_validate(name):
    family = load_family(name)
    assert family.name == name and family.version >= 1 and family.description
    for version in (family, family.smoke_version()):
        tasks = version.tasks()
        assert tasks
        assert len({t.run_id for t in tasks}) == len(tasks)
        for task in tasks:
            validate(task)


def test_width_family_is_the_papers_grid():
    tasks = load_family("width").tasks()
    assert len(tasks) == 2 * 6 * 7 * 3  # datasets x rules x widths x learning rates
    cifar = [t.config for t in tasks if t.config["dataset"] == "cifar10"]
    assert {c["epochs"] for c in cifar} == {150}
    assert sorted({c["width"] for c in cifar}) == [8, 16, 32, 64, 128, 256, 512]


def test_overrides_fix_a_value_or_replace_a_sweep():
    family = load_family("width").smoke_version()
    fixed = family.with_overrides({"width": 4, "epochs": 1})
    assert {t.config["width"] for t in fixed.tasks()} == {4}
    assert len(fixed.tasks()) == 6  # rules only: width is no longer swept
    swept = family.with_overrides({"sweep.width": [4, 8], "sweep.rule": ["bp"]})
    assert [t.config["width"] for t in swept.tasks()] == [4, 8]


def test_run_ids_are_stable_and_change_with_the_configuration():
    a = load_family("seeds").smoke_version().tasks()
    b = load_family("seeds").smoke_version().tasks()
    assert [t.run_id for t in a] == [t.run_id for t in b]
    c = load_family("seeds").smoke_version().with_overrides({"epochs": 9}).tasks()
    assert a[0].run_id.split("_")[:-1] == c[0].run_id.split("_")[:-1] and a[0].run_id != c[0].run_id


@pytest.mark.parametrize(
    "text,expected",
    [
        ("epochs=2", ("epochs", 2)),
        ("lr = 0.5", ("lr", 0.5)),
        ("sweep.width=[8, 16]", ("sweep.width", [8, 16])),
        ("dataset=kmnist", ("dataset", "kmnist")),
        ('dataset="cifar10"', ("dataset", "cifar10")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_bad_names_and_overrides_raise():
    with pytest.raises(ValueError, match="unknown experiment family"):
        load_family("widths")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("epochs")
    bad = Family("x", 1, "d", "train", {"widht": 8}, [{"rule": ["bp"]}])
    with pytest.raises(ValueError, match="unknown configuration key"):
        validate(bad.tasks()[0])


def test_a_family_can_select_the_reference_variant():
    """``variant = "reference"`` is an ordinary configuration key of a catalogue file or override."""
    family = load_family("add").smoke_version().with_overrides({"variant": "reference"})
    tasks = family.tasks()
    assert {t.config["variant"] for t in tasks} == {"reference"}
    for task in tasks:
        validate(task)
    with pytest.raises(ValueError, match="unknown variant"):
        validate(load_family("add").smoke_version().with_overrides({"variant": "tf"}).tasks()[0])
