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
from widealign.rules.base import Rule, StepResult
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


def make_rule(name: str, model: nn.Module, loss: str | Loss = "mse", seed: int = 0) -> Rule:
    """The rule called ``name`` bound to ``model``; ``seed`` draws fa/dfa feedback matrices.

    Create it when training starts: align-zero and align-ada copy theta_0, align-prop copies W(0).
    """
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {', '.join(RULES)}")
    cls = RULES[name]
    if issubclass(cls, _SEEDED):
        return cls(model, loss, seed=seed)
    return cls(model, loss)


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
    "make_rule",
]
