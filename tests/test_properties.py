"""Property-based tests (Hypothesis) of the configuration and TOML loaders and of the command line's
argument checks: arbitrary bad values give a ValueError (one line through the CLI, exit 2), never
another exception or a traceback."""

from __future__ import annotations

import math

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from widealign.cli.main import main  # noqa: E402
from widealign.runs.config import RunConfig  # noqa: E402
from widealign.sweeps.catalogue import family_from_toml, parse_override  # noqa: E402
from widealign.sweeps.runners import validate  # noqa: E402

CHEAP = settings(max_examples=200, deadline=None)
#: Calls of main() that load data: few examples (each one builds the parser and checks a configuration).
CLI = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Any JSON/TOML-like value: what a family file or an override could put in a field.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
FIELDS = [
    "rule", "variant", "dataset", "model", "width", "preset", "strides", "depth", "kernel_size",
    "parameterization", "norm", "eps", "loss", "optimizer", "lr", "epochs", "batch_size", "train_size",
    "holdout", "official_test", "eval_train", "seed", "device", "dtype", "autocast", "rule_options",
]  # fmt: skip


@CHEAP
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=4))
def test_any_configuration_is_valid_or_a_value_error(fields):
    try:
        cfg = RunConfig(**fields).resolved()
    except ValueError as err:
        assert "\n" not in str(err) and str(err)
        return
    assert cfg.resolved() == cfg  # a valid configuration resolves to itself


@CHEAP
@given(st.text(max_size=300))
def test_any_text_is_a_family_file_or_a_value_error(text):
    try:
        family_from_toml(text, "f.toml")
    except ValueError as err:
        assert str(err).startswith("f.toml")


def toml_value(value) -> str:
    """``value`` as TOML text (None has no TOML form: an empty string stands in)."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items() if k.isprintable()) + "}"


@CHEAP
@given(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=3),
    st.dictionaries(st.sampled_from(FIELDS), st.lists(values, max_size=3), max_size=2),
)
def test_any_family_of_valid_toml_expands_and_validates_or_says_why(base, swept):
    lines = ['name = "p"', "version = 1", 'description = "d"', "[base]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in base.items()]
    lines += ["[[sweep]]"] + [f"{k} = {toml_value(v)}" for k, v in swept.items()]
    try:
        family = family_from_toml("\n".join(lines), "p.toml")
        for task in family.tasks(max_runs=50):
            validate(task)
    except ValueError as err:
        assert "\n" not in str(err)


@CHEAP
@given(st.text(max_size=60))
def test_any_override_text_parses_or_is_a_value_error(text):
    try:
        key, _ = parse_override(text)
    except ValueError as err:
        assert "override" in str(err)
        return
    assert key and key == key.strip()


#: Values that are wrong for every numeric flag of ``train``: text, non-positive, non-finite, huge.
bad_numbers = st.one_of(
    st.text(min_size=1, max_size=8).filter(lambda t: not t.startswith("-") or t == "-"),
    st.integers(max_value=0).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-0.0", "0x10", "1_0_", "", " "]),
)
FLAGS = ["--width", "--epochs", "--batch-size", "--lr", "--eps", "--depth", "--kernel-size", "--train-size"]


def _bad_for(flag: str, value: str) -> bool:
    """Whether ``value`` is really wrong for ``flag`` (Python's int/float accept some odd spellings)."""
    number = float if flag in ("--lr", "--eps") else int
    try:
        parsed = number(value)
    except ValueError:
        return True
    return not (math.isfinite(parsed) and parsed > 0)


@CLI
@given(st.sampled_from(FLAGS), bad_numbers)
def test_any_bad_value_of_a_train_flag_is_one_line_and_exit_2(capsys, tmp_path_factory, flag, value):
    if not _bad_for(flag, value):
        return
    out = tmp_path_factory.mktemp("p") / "run"
    code = main(["train", "--model", "mlp", "--width", "8", "--epochs", "1", "--no-progress",
                 "--out", str(out), flag, value])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, (flag, value, err)
    assert err.count("\n") == 1 and err.startswith("widealign: error: "), err
    assert not (out / "result.json").exists()


@CLI
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=12), values)
def test_any_set_override_on_a_dry_run_lists_runs_or_is_one_line(capsys, key, value):
    code = main(["run", "width", "--smoke", "--dry-run", "--set", f"{key}={toml_value(value)}"])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    if code == 2:
        assert captured.err.count("\n") == 1 and captured.err.startswith("widealign: error: "), captured.err
