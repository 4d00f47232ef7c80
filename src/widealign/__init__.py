"""widealign: train wide neural networks without backpropagation.

The public API re-exports the pieces most users need; everything else lives in the subpackages
``models``, ``rules``, ``data``, ``train``, ``diagnostics``, ``runs`` (one run), ``sweeps``,
``studies``, ``bench`` and ``report``.
"""

import os
import sys
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

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

from widealign.models import MLP, RNN, ConvNet, TwoLayer, convert, synaptic_layers  # noqa: E402
from widealign.rules import RULES, Rule, make_rule, register_rule  # noqa: E402

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
