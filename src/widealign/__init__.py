"""widealign: train wide neural networks without backpropagation.

The public API re-exports the pieces most users need; everything else lives in the subpackages
``models``, ``rules``, ``data``, ``train``, ``diagnostics``, ``runs`` (one run), ``sweeps``,
``studies``, ``bench`` and ``report``. The re-exports are loaded on first use (a module
``__getattr__``), so ``import widealign`` alone does not import torch: the command line answers
``widealign --version``, ``--help``, ``rules`` and ``run --list`` without it.
"""

import os
import sys
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING

# Before torch loads its OpenMP runtime (which reads this once): threads waiting for a partner
# sleep instead of spinning, so a step does not collapse when another process holds a core
# (docs/performance.md#a-shared-machine). A value set by the user is kept; a program that
# imported torch before widealign keeps OpenMP's default.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = _version("widealign")
except _PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

if _TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports them
    from widealign.models import MLP, RNN, ConvNet, TwoLayer, convert, synaptic_layers
    from widealign.rules import RULES, Rule, make_rule, register_rule

#: Each re-exported name and the subpackage it comes from, imported when first asked for.
_LAZY = {
    **dict.fromkeys(("MLP", "RNN", "ConvNet", "TwoLayer", "convert", "synaptic_layers"), "widealign.models"),
    **dict.fromkeys(("RULES", "Rule", "make_rule", "register_rule"), "widealign.rules"),
}


def __getattr__(name: str) -> object:
    """The re-exported name ``name``, imported from its subpackage on first use (then cached)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'widealign' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MLP",
    "RNN",
    "RULES",
    "ConvNet",
    "Rule",
    "TwoLayer",
    "__version__",
    "convert",
    "make_rule",
    "register_rule",
    "synaptic_layers",
]
