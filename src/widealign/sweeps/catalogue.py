"""The experiment catalogue: one readable TOML file per family of docs/method.md#experiments.

A family file has a ``name``, a ``version``, a one-line ``description``, optionally what it
``reproduces`` (the paper and its figure, table or experiment; ``widealign run --list`` shows it),
the run ``kind`` (see
:mod:`widealign.sweeps.runners`), a ``[base]`` table of configuration values shared by all its
runs, and one or more ``[[sweep]]`` blocks. In a block, a list is swept (the block expands into the
product of its lists) and a scalar is fixed for that block's runs. ``[smoke]`` holds the overrides of
the quick version on bundled data (its own ``[[smoke.sweep]]`` blocks, if any, replace the full
version's).

Command-line overrides are dotted ``key=value`` pairs, the value in TOML syntax (a bare word is a
string): ``epochs=2`` fixes a value in every run (also where a block sweeps it), ``sweep.width=[8,16]``
replaces the values a block sweeps (in every block that sweeps ``width``, or adds it to all blocks).

A run's folder name and the check that a folder holds the same run use its identity
(:func:`widealign.runs.identity.run_identity`), which leaves out where it executes. Folder names
keep to characters every file system accepts (others become ``-``) and to :data:`NAME_MAX` bytes
(a longer readable part is cut; the digest at the end keeps names unique).

A family expands into at most :data:`MAX_RUNS` runs unless told otherwise (``widealign run
--max-runs N``): the grid is counted before it is expanded, so a typo such as a list of 10^4
values in four keys is refused at once instead of filling memory.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from widealign.runs.identity import run_identity
from widealign.suggest import suggestion

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


#: The most runs a family may expand into unless the caller raises it (``--max-runs``).
MAX_RUNS = 100_000
#: The longest file name (in bytes) that common file systems accept (ext4, NTFS, APFS: 255).
NAME_MAX = 255
#: Characters that some file system refuses in a name (Windows: ``<>:"/\\|?*``; control characters).
UNSAFE_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f\s]')


@dataclass(frozen=True)
class Task:
    """One run of a sweep: its kind, its full configuration and its folder name."""

    kind: str
    config: dict[str, Any]
    run_id: str


@dataclass(frozen=True)
class Family:
    """One experiment family, as read from its catalogue file."""

    name: str
    version: int
    description: str
    kind: str
    base: dict[str, Any]
    sweeps: list[dict[str, Any]]
    smoke: dict[str, Any] = field(default_factory=dict)
    #: The paper and its figure, table or experiment that the family reproduces ("" for one's own).
    reproduces: str = ""

    def smoke_version(self) -> Family:
        """The family with its ``[smoke]`` overrides applied."""
        smoke = copy.deepcopy(self.smoke)
        sweeps = smoke.pop("sweep", None)
        family = replace(self, base={**self.base}, smoke={}).with_overrides(smoke)
        if sweeps is not None:
            family = replace(family, sweeps=sweeps)
        return family

    def with_overrides(self, overrides: dict[str, Any]) -> Family:
        """Apply ``key=value`` (fix everywhere) and ``sweep.key=[...]`` (sweep these) overrides."""
        base, sweeps = dict(self.base), [dict(b) for b in self.sweeps]
        for key, value in overrides.items():
            if key.startswith("sweep."):
                name = key.removeprefix("sweep.")
                values = value if isinstance(value, list) else [value]
                for block in sweeps:
                    block[name] = values
            else:
                base[key] = value
                for block in sweeps:
                    block.pop(key, None)
        return replace(self, base=base, sweeps=sweeps)

    def count(self) -> int:
        """How many runs the sweep blocks describe (before duplicates are removed), without expanding them."""
        return sum(math.prod(len(v) for v in b.values() if isinstance(v, list)) for b in self.sweeps or [{}])

    def tasks(self, max_runs: int | None = MAX_RUNS) -> list[Task]:
        """Every run of the family, in a stable order, each with a unique, readable folder name.

        Raises ValueError, before expanding anything, if the blocks describe more than ``max_runs``
        runs (None: no limit).
        """
        count = self.count()
        if max_runs is not None and count > max_runs:
            sizes = "; ".join(
                " x ".join(f"{k} {len(v)}" for k, v in b.items() if isinstance(v, list)) or "1"
                for b in self.sweeps
            )
            raise ValueError(
                f"family {self.name!r} describes {count:,} runs ({sizes}); at most {max_runs:,} are allowed "
                "(raise the limit with --max-runs N)"
            )
        tasks, seen = [], set()
        for block in self.sweeps or [{}]:
            swept = {k: v for k, v in block.items() if isinstance(v, list)}
            fixed = {k: v for k, v in block.items() if not isinstance(v, list)}
            for values in itertools.product(*swept.values()):
                point = dict(zip(swept, values))
                config = {**self.base, **fixed, **point}
                run_id = _run_id(point, config)
                if run_id not in seen:
                    seen.add(run_id)
                    tasks.append(Task(self.kind, config, run_id))
        return tasks


def _run_id(point: dict[str, Any], config: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(run_identity(config), sort_keys=True).encode()).hexdigest()[:8]
    point = run_identity(point)
    readable = UNSAFE_NAME.sub("-", "_".join(f"{k}-{v}" for k, v in point.items()).replace(" ", ""))
    room = NAME_MAX - len(digest) - 1
    if len(readable.encode()) > room:
        readable = readable.encode()[:room].decode(errors="ignore")
    return f"{readable}_{digest}" if readable else digest


def check_family_name(name: Any, source: str) -> None:
    """A family name is used as a folder name: non-empty, not ``.`` or ``..``, safe characters."""
    if (
        not isinstance(name, str)
        or name.strip(".") == ""
        or UNSAFE_NAME.search(name)
        or len(name.encode()) > NAME_MAX
    ):
        raise ValueError(
            f"{source}: name must be a folder name (letters, digits, '.', '-', '_'; not '.' or '..'; "
            f"at most {NAME_MAX} bytes), got {name!r}"
        )


def family_names() -> list[str]:
    """Names of the catalogue's families, sorted."""
    files = resources.files("widealign.sweeps").joinpath("families").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def is_family_file(name: str | os.PathLike) -> bool:
    """Whether ``name`` names a catalogue file of one's own (a ``.toml`` path) rather than a family."""
    text = str(name)
    return text.endswith(".toml") or os.sep in text or "/" in text


def load_family(name: str | os.PathLike) -> Family:
    """The packaged family called ``name``, or the family in the TOML file at path ``name``.

    A file of one's own follows the packaged files' format (see the module docstring) and gets the
    same checks: here its structure, and its runs' configurations when a sweep validates its tasks.
    An unknown name lists the known ones.
    """
    if is_family_file(name):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"no experiment family file {str(path)!r}")
        try:
            text = path.read_bytes().decode()
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{path} is not a UTF-8 text file (byte {err.object[err.start]:#04x} at position "
                f"{err.start}); save it as UTF-8"
            ) from None
        return family_from_toml(text, str(path))
    names = family_names()
    if name not in names:
        hint = suggestion(name, names)
        hint = f" ({hint})" if hint else ""
        raise ValueError(
            f"unknown experiment family {name!r}{hint}; choose one of {', '.join(names)}, "
            "or give a .toml file"
        )
    text = resources.files("widealign.sweeps").joinpath("families", f"{name}.toml").read_text()
    return family_from_toml(text, f"{name}.toml")


#: Top-level keys of a family file; ``name``, ``version`` and ``description`` are required.
FAMILY_KEYS = ("name", "version", "description", "reproduces", "kind", "base", "sweep", "smoke")


def family_from_toml(text: str, source: str) -> Family:
    """Parse one family file's text (``source`` names it in error messages)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source} is not valid TOML: {err}") from err
    missing = [k for k in ("name", "version", "description") if k not in raw]
    if missing:
        raise ValueError(
            f"{source} lacks {', '.join(missing)} (a family file starts with name, version, description)"
        )
    unknown = sorted(set(raw) - set(FAMILY_KEYS))
    if unknown:
        hint = suggestion(unknown[0], FAMILY_KEYS)
        hint = f" ({hint})" if hint else ""
        raise ValueError(
            f"{source} has unknown key(s) {', '.join(unknown)}{hint}; known: {', '.join(FAMILY_KEYS)}"
        )
    check_family_name(raw["name"], source)
    if not isinstance(raw["version"], int) or isinstance(raw["version"], bool) or raw["version"] < 1:
        raise ValueError(f"{source}: version must be a positive integer, got {raw['version']!r}")
    sweeps = raw.get("sweep", [])
    sweeps = sweeps if isinstance(sweeps, list) else [sweeps]
    for table, value in (
        ("base", raw.get("base", {})),
        ("smoke", raw.get("smoke", {})),
        *(("sweep", b) for b in sweeps),
    ):
        if not isinstance(value, dict):
            raise ValueError(f"{source}: [{table}] must be a table, got {value!r}")
    return Family(
        name=raw["name"],
        version=raw["version"],
        description=str(raw["description"]),
        kind=raw.get("kind", "train"),
        base=raw.get("base", {}),
        sweeps=sweeps,
        smoke=raw.get("smoke", {}),
        reproduces=_text(raw.get("reproduces", ""), "reproduces", source),
    )


def _text(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{source}: {key} must be a string, got {value!r}")
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` with a TOML value (``epochs=2``, ``sweep.width=[8, 16]``, ``dataset=kmnist``)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key:
        raise ValueError(f"override {text!r} has no key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value
