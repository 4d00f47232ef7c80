"""Learning rules by name (SPEC section 3).

>>> rule = make_rule("align-ada", model)
>>> loss, output = rule.backward(x, y)   # update left in the parameters' .grad
>>> optimizer.step()
"""

from __future__ import annotations

from torch import nn

from widealign.losses import Loss
from widealign.rules.align_ada import AlignAda
from widealign.rules.align_prop import AlignProp
from widealign.rules.align_zero import AlignZero
from widealign.rules.base import VARIANTS, Rule, StepResult, check_variant
from widealign.rules.bp import Backprop
from widealign.rules.dfa import DirectFeedbackAlignment
from widealign.rules.fa import FeedbackAlignment
from widealign.rules.readout import Readout

RULES: dict[str, type[Rule]] = {
    rule.name: rule
    for rule in (
        Backprop,
        Readout,
        AlignZero,
        AlignAda,
        AlignProp,
        FeedbackAlignment,
        DirectFeedbackAlignment,
    )
}

#: Rules whose constructor takes a ``seed`` (they draw random feedback matrices).
_SEEDED = (FeedbackAlignment, DirectFeedbackAlignment)


def make_rule(
    name: str, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, variant: str = "default"
) -> Rule:
    """The rule called ``name`` bound to ``model``; ``seed`` draws fa/dfa feedback matrices.

    ``variant="reference"`` selects the authors' code's version of align-ada, align-zero and
    readout (``docs/method.md#variants``); every rule has ``"default"``, the rule as the method
    states it. Create the rule when training starts: align-zero and align-ada copy theta_0,
    align-prop copies W(0).
    """
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {', '.join(RULES)}")
    cls = RULES[name]
    check_variant(cls, variant)
    kwargs: dict = {"seed": seed} if issubclass(cls, _SEEDED) else {}
    if variant != "default":
        kwargs["variant"] = variant
    return cls(model, loss, **kwargs)


__all__ = [
    "RULES",
    "AlignAda",
    "AlignProp",
    "AlignZero",
    "Backprop",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "Readout",
    "Rule",
    "StepResult",
    "VARIANTS",
    "make_rule",
]
