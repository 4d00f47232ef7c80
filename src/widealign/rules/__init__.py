"""Learning rules by name (SPEC section 3).

>>> rule = make_rule("align-ada", model)
>>> loss, output = rule.backward(x, y)   # update left in the parameters' .grad
>>> optimizer.step()
"""

from __future__ import annotations

import inspect

from torch import nn

from widealign.losses import Loss
from widealign.rules.align_ada import AlignAda
from widealign.rules.align_prop import AlignProp
from widealign.rules.align_zero import AlignZero
from widealign.rules.base import VARIANTS, Rule, StepResult, check_variant
from widealign.rules.bp import Backprop
from widealign.rules.brsf import BatchRandomSignFeedback
from widealign.rules.dfa import DirectFeedbackAlignment
from widealign.rules.fa import FeedbackAlignment
from widealign.rules.frsf import FixedRandomSignFeedback
from widealign.rules.information_alignment import InformationAlignment
from widealign.rules.kolen_pollack import KolenPollack
from widealign.rules.readout import Readout
from widealign.rules.symmetric_alignment import SymmetricAlignment
from widealign.rules.usf import UniformSignFeedback
from widealign.rules.weight_mirror import WeightMirror

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
        UniformSignFeedback,
        BatchRandomSignFeedback,
        FixedRandomSignFeedback,
        KolenPollack,
        WeightMirror,
        InformationAlignment,
        SymmetricAlignment,
    )
}


def make_rule(
    name: str,
    model: nn.Module,
    loss: str | Loss = "mse",
    seed: int = 0,
    variant: str = "default",
    lr: float | None = None,
) -> Rule:
    """The rule called ``name`` bound to ``model``.

    ``seed`` draws random feedback (fa, dfa, the sign-symmetry and learned-feedback rules).
    ``variant="reference"`` selects the authors' code's version of align-ada, align-zero and
    readout (``docs/method.md#variants``); every rule has ``"default"``, the rule as the method
    states it. ``lr`` is the run's learning rate, the step size of the rules that learn their
    feedback (kolen-pollack, weight-mirror, information-alignment, symmetric-alignment); other
    rules ignore it. Create the rule when training starts: align-zero and align-ada copy theta_0,
    align-prop copies W(0).
    """
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {', '.join(RULES)}")
    cls = RULES[name]
    check_variant(cls, variant)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {"seed": seed, "lr": lr}.items() if k in accepted}
    if variant != "default":
        kwargs["variant"] = variant
    return cls(model, loss, **kwargs)


__all__ = [
    "RULES",
    "AlignAda",
    "AlignProp",
    "AlignZero",
    "Backprop",
    "BatchRandomSignFeedback",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "FixedRandomSignFeedback",
    "InformationAlignment",
    "KolenPollack",
    "Readout",
    "Rule",
    "StepResult",
    "SymmetricAlignment",
    "UniformSignFeedback",
    "VARIANTS",
    "WeightMirror",
    "make_rule",
]
