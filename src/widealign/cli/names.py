"""The names the command line offers, from a static index, so that it starts without torch.

``widealign --version``, ``--help``, ``rules`` and ``run --list`` need only names: the rules
(their one-line descriptions, variants and options), the data sets, models, losses, presets and
other choices, the packaged experiment families, and a few defaults. Finding them in the live
registries would import torch and every rule (seconds); :data:`INDEX_FILE` (``names.json``, next
to this module) holds them instead. :func:`build_index` computes the index from the live
registries and ``python -m widealign.cli.names`` rewrites the file; tests/cli/test_names.py fails
when the file differs from what :func:`build_index` gives, so it cannot go stale.

The index holds the packaged rules only. Rules of installed plugins (the ``widealign.rules``
entry points) are found without importing them (:func:`plugin_rule_names`); where there are
any, ``widealign rules`` lists the live registry instead.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

#: The index file, shipped with the package.
INDEX_FILE = Path(__file__).with_name("names.json")
#: The entry-point group of plugin rules (``widealign.rules.registry.ENTRY_POINT_GROUP``).
ENTRY_POINT_GROUP = "widealign.rules"


@cache
def index() -> dict[str, Any]:
    """The static index (read once per process)."""
    return json.loads(INDEX_FILE.read_text(encoding="utf-8"))


def plugin_rule_names() -> list[str]:
    """Names of the rules that installed plugins declare, read from their metadata (nothing imported)."""
    from importlib.metadata import entry_points

    return [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]


def rule_entry(name: str) -> dict[str, Any]:
    """Rule ``name``'s index entry, from the live registry: its docstring's first line, its variants
    and its options (defaults as text, as ``widealign rules`` prints them)."""
    from widealign.rules import get_rule, rule_options

    cls = get_rule(name)
    return {
        "description": ((cls.__doc__ or "").strip().splitlines() or [""])[0],
        "variants": list(cls.variants),
        "options": {k: str(v) for k, v in rule_options(name).items()},
    }


def build_index() -> dict[str, Any]:
    """The index computed from the live registries (imports torch, every rule and the catalogue)."""
    from widealign.data import DATASETS
    from widealign.losses import LOSSES
    from widealign.models import CONV_PRESETS, NORMS
    from widealign.models.layers import PARAMETERIZATIONS
    from widealign.rules import RULES, VARIANTS
    from widealign.runs.config import DTYPES, MODELS, OPTIMIZERS, SCHEDULES
    from widealign.runs.run import DATA_DIR_ENV, DOWNLOAD_ENV
    from widealign.sweeps.catalogue import MAX_RUNS, family_names, load_family
    from widealign.sweeps.estimate import family_time_classes
    from widealign.sweeps.sweep import DEFAULT_BATCH_RUNS, EXECUTORS
    from widealign.train.loop import AUTOCAST_DTYPES

    # An installed plugin's rule is found at run time, not shipped in the index.
    rules = {name: rule_entry(name) for name, cls in RULES.items() if cls.__module__.startswith("widealign.")}
    families = {}
    for name in family_names():
        family = load_family(name)
        families[name] = {
            "runs": len(family.tasks()),
            "smoke": len(family.smoke_version().tasks()),
            "time_classes": family_time_classes(family),
            "description": family.description,
            "reproduces": family.reproduces,
        }
    return {
        "rules": rules,
        "variants": list(VARIANTS),
        "datasets": list(DATASETS),
        "models": list(MODELS),
        "losses": list(LOSSES),
        "conv_presets": list(CONV_PRESETS),
        "norms": list(NORMS),
        "parameterizations": list(PARAMETERIZATIONS),
        "optimizers": list(OPTIMIZERS),
        "schedules": list(SCHEDULES),
        "dtypes": list(DTYPES),
        "autocast_dtypes": list(AUTOCAST_DTYPES),
        "executors": list(EXECUTORS),
        "families": families,
        "defaults": {"max_runs": MAX_RUNS, "batch_runs": DEFAULT_BATCH_RUNS},
        "environment": {"data_dir": DATA_DIR_ENV, "download": DOWNLOAD_ENV},
    }


def index_text(data: dict[str, Any]) -> str:
    """The index as the file holds it: JSON, keys in the registries' order (the order the command
    line lists rules and choices in)."""
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    """Rewrite :data:`INDEX_FILE` from the live registries."""
    INDEX_FILE.write_text(index_text(build_index()), encoding="utf-8")
    print(f"wrote {INDEX_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
