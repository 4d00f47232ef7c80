"""The experiment catalogue: every family loads, validates and expands as its file says."""

from __future__ import annotations

import pytest

from widealign.sweeps.catalogue import Family, family_names, load_family, parse_override
from widealign.sweeps.runners import validate

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


WIDTHS = [8, 16, 32, 64, 128, 256, 512]
LRS = [5.0, 2.0, 1.0]
SIX = ["bp", "align-ada", "align-zero", "fa", "dfa", "readout"]
FIVE = ["bp", "align-ada", "align-zero", "fa", "dfa"]
GRID_KEYS = ("kind", "mode", "dataset", "rule", "width", "lr", "epochs", "train_size", "seed", "optimizer")


def grid(name: str) -> list[tuple]:
    """Every run of the full family as (kind, mode, dataset, rule, width, lr, epochs, train_size,
    seed, optimizer), with the run's resolved values (defaults filled in)."""
    from widealign.runs.config import RunConfig
    from widealign.studies.alignment import alignment_config

    points = []
    for task in load_family(name).tasks():
        if task.kind == "alignment":
            cfg = alignment_config(task.config)
            mode = cfg.extra["mode"]
        else:
            cfg, mode = RunConfig(**task.config).resolved(), None
        points.append((task.kind, mode, cfg.dataset, cfg.rule, cfg.width, cfg.lr, cfg.epochs,
                       cfg.train_size, cfg.seed, cfg.optimizer))  # fmt: skip
    return points


def points(
    datasets_epochs, rules, widths, lrs, sizes=(None,), seeds=(0,), kind="train", mode=None, opt="sgd"
):
    return [
        (kind, mode, d, r, w, lr, e, n, s, opt)
        for d, e in datasets_epochs for r in rules for w in widths for lr in lrs for n in sizes for s in seeds
    ]  # fmt: skip


CIFAR, KMNIST = ("cifar10", 150), ("kmnist", 100)
#: Each family's full grid, as the authors' scripts run it (train_*.py, alignment_*.py).
EXPECTED_GRIDS = {
    "width": points([CIFAR, KMNIST], SIX, WIDTHS, LRS),
    "lr-sweep": points([CIFAR, KMNIST], SIX, [8, 256], [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]),
    "adam": points([CIFAR], ["bp", "align-ada", "align-zero"], WIDTHS,
                   [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5], opt="adam"),
    "low-data": points([CIFAR], FIVE, WIDTHS, LRS, sizes=[45, 150, 450, 1500, 4500, 15000, 45000]),
    "align-prop": points([CIFAR], ["align-prop", "bp"], WIDTHS, LRS),
    "seeds": points([CIFAR], FIVE, [256], LRS, seeds=[100, 101, 102, 103, 104]),
    "timing": points([("cifar10", 1)], ["bp", "align-ada", "align-zero"], WIDTHS, LRS,
                     seeds=[100, 101, 102, 103, 104]),
    "imagenet": points([("imagenet", 300)], FIVE, [512], [5.0]),
    # train_add.py's bp, align-ada, align-zero and readout, plus dfa through time (widealign's).
    "add": points([("add", 200)], ["bp", "align-ada", "align-zero", "readout", "dfa"],
                  [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096], [0.001]),
    "alignment": points([CIFAR, KMNIST], ["bp"], WIDTHS, [5.0], kind="alignment", mode="score")
    + points([("cifar10", 300), ("kmnist", 300)], ["bp"], [512], [5.0], kind="alignment", mode="score")
    + points([KMNIST], ["align-ada", "align-zero", "align-prop", "fa", "dfa", "readout"], WIDTHS, [5.0],
             kind="alignment", mode="update"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_GRIDS))
def test_every_family_is_the_authors_grid(name):
    """Rules, widths, learning rates, epochs, data sizes and seeds of every run, exactly."""
    got, expected = grid(name), EXPECTED_GRIDS[name]
    assert len(got) == len(set(got)) == len(expected)
    assert sorted(got, key=repr) == sorted(expected, key=repr)


def test_every_family_with_a_paper_grid_is_pinned():
    """song2021 has its own tests; two-routes and relaxation are widealign's, not the paper's."""
    assert set(family_names()) - set(EXPECTED_GRIDS) == {"song2021", "two-routes", "relaxation"}


def test_low_data_batches_follow_the_training_set_size():
    from widealign.runs.config import RunConfig

    sizes = {
        t.config["train_size"]: RunConfig(**t.config).resolved().batch_size
        for t in load_family("low-data").tasks()
    }
    assert sizes == {45: 45, 150: 50, 450: 50, 1500: 100, 4500: 100, 15000: 100, 45000: 100}
    for t in load_family("low-data").smoke_version().tasks():
        assert RunConfig(**t.config).resolved().batch_size >= 45


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


def test_the_autocast_field_leaves_existing_run_ids_unchanged():
    """``rule-bp_seed-100_lr-5.0_d4e48129`` is the id this task had before ``autocast`` existed;
    naming the default keeps it, and only ``bf16`` makes another run."""
    before = "rule-bp_seed-100_lr-5.0_d4e48129"
    family = load_family("seeds").smoke_version()
    assert family.tasks()[0].run_id == before
    assert family.with_overrides({"autocast": None}).tasks()[0].run_id == before
    assert family.with_overrides({"autocast": "bf16"}).tasks()[0].run_id != before


@pytest.mark.parametrize("name", family_names())
def test_every_packaged_family_says_what_it_reproduces_and_keeps_it_when_overridden(name):
    family = load_family(name)
    assert family.reproduces.strip()
    assert family.smoke_version().reproduces == family.reproduces
    assert family.with_overrides({"epochs": 1, "sweep.seed": [0, 1]}).reproduces == family.reproduces


def test_reproduces_is_optional_and_must_be_text():
    from widealign.sweeps.catalogue import family_from_toml

    head = 'name = "mine"\nversion = 1\ndescription = "d"\n'
    assert family_from_toml(head, "mine.toml").reproduces == ""
    assert family_from_toml(head + 'reproduces = "Fig. 9"\n', "mine.toml").reproduces == "Fig. 9"
    with pytest.raises(ValueError, match="reproduces must be a string, got 3"):
        family_from_toml(head + "reproduces = 3\n", "mine.toml")
