"""Each public package says what is public in ``__all__``: every listed name exists, and every
function or class the package defines itself without a leading underscore is listed (the API
reference, docs/api/, renders exactly these)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest

PUBLIC = ["widealign"] + [f"widealign.{p}" for p in ("rules", "models", "train", "diagnostics", "data")]
PUBLIC += ["widealign.testing"] if importlib.util.find_spec("widealign.testing") else []


@pytest.mark.parametrize("name", PUBLIC)
def test_all_lists_the_public_names_and_they_exist(name):
    package = importlib.import_module(name)
    assert len(package.__all__) == len(set(package.__all__))
    assert [n for n in package.__all__ if not hasattr(package, n)] == []
    own = [
        n
        for n, value in vars(package).items()
        if not n.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == name
    ]
    assert [n for n in own if n not in package.__all__] == []


def test_the_top_level_package_exposes_no_stray_helpers():
    import widealign

    stray = [n for n in vars(widealign) if not n.startswith("_") and n not in widealign.__all__]
    stray = [n for n in stray if not inspect.ismodule(getattr(widealign, n))]
    assert stray == []  # e.g. importlib's ``version`` imported under its own name
