"""Learning rules by name (docs/method.md#learning-rules).

>>> rule = make_rule("align-ada", model)
>>> optimizer = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=0.05)
>>> optimizer.zero_grad()
>>> loss, output = rule.backward(x, y)   # update added to the parameters' .grad
>>> optimizer.step()

Rules are found through :mod:`widealign.rules.registry`: registered names (every module here
registers its rule with :func:`register_rule`), installed entry points, ``"package.module:Class"``.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from widealign.losses import Loss
from widealign.rules.base import READS, VARIANTS, Rule, StepResult, check_variant
from widealign.rules.learned import LR_MOVED, StoredFeedback
from widealign.rules.registry import ENTRY_POINT_GROUP, RULES, get_rule, register_rule
from widealign.suggest import suggestion

# Each module registers its rule with @register_rule as it is imported; this order is the order in
# which ``widealign rules`` lists them (installed plugins' rules follow).
# isort: off
from widealign.rules.bp import Backprop
from widealign.rules.readout import Readout
from widealign.rules.align_zero import AlignZero
from widealign.rules.align_ada import AlignAda
from widealign.rules.fa import FeedbackAlignment
from widealign.rules.align_prop import AlignProp
from widealign.rules.dfa import DirectFeedbackAlignment
from widealign.rules.usf import UniformSignFeedback
from widealign.rules.brsf import BatchRandomSignFeedback
from widealign.rules.frsf import FixedRandomSignFeedback
from widealign.rules.kolen_pollack import KolenPollack
from widealign.rules.weight_mirror import WeightMirror
from widealign.rules.information_alignment import InformationAlignment
from widealign.rules.symmetric_alignment import SymmetricAlignment
from widealign.rules.activation_relaxation import ActivationRelaxation
from widealign.rules.predictive_coding import PredictiveCoding
from widealign.rules.pal import PhaselessAlignment
from widealign.rules.dynamic_inversion import DynamicInversion

# isort: on


def learns_feedback(rule: str | type[Rule]) -> bool:
    """Whether ``rule`` learns feedback matrices that the optimiser must step
    (``rule.feedback_parameters()``; :mod:`widealign.rules.learned`)."""
    return issubclass(get_rule(rule), StoredFeedback)


def rule_options(name: str | type[Rule]) -> dict[str, Any]:
    """The options rule ``name`` takes (keyword arguments besides model, loss and seed) and their defaults."""
    params = inspect.signature(get_rule(name).__init__).parameters
    fixed = ("self", "model", "loss", "seed", "variant", "lr")
    return {k: p.default for k, p in params.items() if k not in fixed}


def _coerce(rule: str, key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of the option's default (a CLI string becomes a bool, int or float)."""
    kind = type(default)
    if isinstance(value, str) and kind is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{rule} option {key} must be true or false, got {value!r}")
        return value.lower() in ("true", "1", "yes")
    if kind in (int, float) and not isinstance(value, bool):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{rule} option {key} must be a number, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError(f"{rule} option {key} must be an integer, got {value!r}")
        return number
    if not isinstance(value, kind):
        raise ValueError(f"{rule} option {key} must be a {kind.__name__}, got {value!r}")
    return value


def check_rule_options(name: str | type[Rule], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against rule ``name``'s (one-line error) and converted to their types."""
    known = rule_options(name)
    name = get_rule(name).name if isinstance(name, type) else name
    unknown = sorted(set(options) - set(known))
    if unknown:
        offered = ", ".join(known) or "none"
        hint = suggestion(unknown[0], known)
        hint = f" ({hint})" if hint else ""
        raise ValueError(f"{name} has no option {unknown[0]!r}{hint}; its options: {offered}")
    return {k: _coerce(name, k, v, known[k]) for k, v in options.items()}


def make_rule(
    name: str | type[Rule],
    model: nn.Module,
    loss: str | Loss = "mse",
    seed: int = 0,
    variant: str = "default",
    lr: float | None = None,
    **options: Any,
) -> Rule:
    """The rule called ``name`` bound to ``model``.

    ``name`` is a registered rule's name (``widealign rules`` lists them), an import path
    ``"package.module:Class"`` of a :class:`Rule` subclass, or the class itself
    (:mod:`widealign.rules.registry`).

    ``seed`` draws random feedback (fa, dfa, the sign-symmetry and learned-feedback rules).
    ``variant="reference"`` selects the authors' code's version of align-ada, align-zero and
    readout (``docs/method.md#variants``); weight-mirror has ``"akrout"`` and ``"kunin"``; every
    rule has ``"default"``, its first variant (the rule as the method states it). The rules that
    learn their feedback (kolen-pollack, weight-mirror, information-alignment,
    symmetric-alignment) take no ``lr``: their feedback matrices are parameters that the user's
    optimiser steps, ``rule.feedback_parameters()``, and ``lr=`` is a one-line error there.
    ``lr`` is the run's learning rate for rules that take one (predictive-coding's learned error
    connections); other rules ignore it. ``options`` are the rule's own settings (:func:`rule_options`), e.g.
    ``iterations=50`` for activation-relaxation; strings are converted to the default's type.
    Create the rule when training starts: align-zero and align-ada copy theta_0, align-prop
    copies W(0).
    """
    cls = get_rule(name)
    kwargs = check_rule_options(cls, options)
    check_variant(cls, variant)
    accepted = inspect.signature(cls.__init__).parameters
    if lr is not None and "lr" not in accepted and learns_feedback(cls):
        raise ValueError(LR_MOVED.format(name=cls.name))
    kwargs |= {k: v for k, v in {"seed": seed, "lr": lr}.items() if k in accepted}
    if variant != "default":
        kwargs["variant"] = variant
    return cls(model, loss, **kwargs)


__all__ = [
    "ENTRY_POINT_GROUP",
    "RULES",
    "ActivationRelaxation",
    "AlignAda",
    "AlignProp",
    "AlignZero",
    "Backprop",
    "BatchRandomSignFeedback",
    "DirectFeedbackAlignment",
    "DynamicInversion",
    "FeedbackAlignment",
    "FixedRandomSignFeedback",
    "InformationAlignment",
    "KolenPollack",
    "PhaselessAlignment",
    "PredictiveCoding",
    "READS",
    "Readout",
    "Rule",
    "StepResult",
    "SymmetricAlignment",
    "UniformSignFeedback",
    "VARIANTS",
    "WeightMirror",
    "check_rule_options",
    "get_rule",
    "learns_feedback",
    "make_rule",
    "register_rule",
    "rule_options",
]
