"""Where rules are found: one registry for the packaged rules, installed plugins and import paths.

A rule is found by name in three places, in this order:

1. the rules registered with :func:`register_rule` (every packaged rule module registers its class
   this way when :mod:`widealign.rules` imports it; a user's module does the same);
2. the entry-point group ``widealign.rules`` of installed distributions (an entry point names a
   ``Rule`` subclass, ``my-rule = "mypackage.rules:MyRule"``, under the rule's ``name``), loaded
   once, the first time a name is not found among the registered rules or the rules are listed;
3. an import path ``"package.module:Class"``, imported on demand (not registered: the spec is the
   rule's name in configurations and results files, so a resumed run imports it again).

:data:`RULES` is a read-only view of all three: ``RULES[name]``, ``name in RULES`` and
``RULES.get(name)`` accept names and import paths; iterating lists the registered and installed
rules (an import path is not listed).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from widealign.suggest import did_you_mean

if TYPE_CHECKING:
    from widealign.rules.base import Rule

#: The entry-point group that installed packages fill with their rules.
ENTRY_POINT_GROUP = "widealign.rules"

R = TypeVar("R", bound=type)

_registered: dict[str, type[Rule]] = {}
_entry_points_loaded = False


def _check_rule_class(cls: object, where: str) -> type[Rule]:
    """``cls`` if it is a :class:`Rule` subclass with a ``name``, else a one-line ``ValueError``."""
    from widealign.rules.base import Rule

    if not (isinstance(cls, type) and issubclass(cls, Rule)):
        raise ValueError(f"{where} is not a widealign Rule subclass (got {cls!r})")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: rule class {cls.__qualname__} must set a class attribute name = '...'")
    if ":" in name:
        raise ValueError(
            f"{where}: a rule's name may not contain ':' (it marks an import path), got {name!r}"
        )
    return cls


def register_rule(cls: R) -> R:
    """Register the :class:`Rule` subclass ``cls`` under ``cls.name``; returns ``cls`` (a decorator).

    Registering a name twice is an error, unless it is the same class defined again (a module
    reloaded, a notebook cell run twice), which replaces the earlier one.
    """
    rule = _check_rule_class(cls, f"register_rule({getattr(cls, '__qualname__', cls)!r})")
    old = _registered.get(rule.name)
    if old is not None and (old.__module__, old.__qualname__) != (rule.__module__, rule.__qualname__):
        raise ValueError(
            f"a rule named {rule.name!r} is already registered ({old.__module__}.{old.__qualname__})"
        )
    _registered[rule.name] = rule
    return cls


def _load_entry_points() -> None:
    """Register the rules of the ``widealign.rules`` entry points, once (a broken one: a warning)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = _check_rule_class(ep.load(), f"entry point {ep.name} = {ep.value!r}")
            if cls.name != ep.name:
                raise ValueError(f"it names rule {cls.name!r}; an entry point's name must be its rule's name")
            if cls.name not in _registered:
                register_rule(cls)
        except Exception as err:  # noqa: BLE001 - one broken plugin must not hide the other rules
            warnings.warn(f"widealign: skipping rule entry point {ep.name!r}: {err}", stacklevel=2)


def is_import_path(name: str) -> bool:
    """Whether ``name`` is a ``"package.module:Class"`` spec rather than a rule's name."""
    return ":" in name


def _import_rule(spec: str) -> type[Rule]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"rule import path {spec!r} must look like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import rule {spec!r}: {err}") from None
    obj: object = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"cannot import rule {spec!r}: module {module_name!r} has no {attribute!r}")
        obj = getattr(obj, part)
    return _check_rule_class(obj, f"rule {spec!r}")


def get_rule(name: str | type[Rule]) -> type[Rule]:
    """The rule class called ``name``: a registered name, an installed entry point, or an import
    path ``"package.module:Class"`` (a ``Rule`` class is returned as it is, once checked).

    Raises a one-line ``ValueError`` for an unknown name or a path that does not name a rule.
    """
    if isinstance(name, type):
        return _check_rule_class(name, f"rule class {name.__qualname__}")
    if not isinstance(name, str):
        raise ValueError(f"a rule is a name or a 'package.module:Class' path, got {name!r}")
    if name in _registered:
        return _registered[name]
    if is_import_path(name):
        return _import_rule(name)
    _load_entry_points()
    if name in _registered:
        return _registered[name]
    raise ValueError(did_you_mean("rule", name, _registered))


class _RuleView(Mapping[str, "type[Rule]"]):
    """The rules by name, read-only (see the module docstring)."""

    def __getitem__(self, name: str) -> type[Rule]:
        try:
            return get_rule(name)
        except ValueError as err:
            raise KeyError(str(err)) from None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            get_rule(name)
        except ValueError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        _load_entry_points()
        return iter(list(_registered))

    def __len__(self) -> int:
        _load_entry_points()
        return len(_registered)

    def __repr__(self) -> str:
        return f"RULES({', '.join(self)})"


#: Every known rule by name, read-only: the registered ones, the installed ones, import paths on demand.
RULES: Mapping[str, type[Rule]] = _RuleView()

__all__ = ["ENTRY_POINT_GROUP", "RULES", "get_rule", "is_import_path", "register_rule"]
