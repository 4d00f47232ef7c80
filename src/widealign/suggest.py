"""One-line errors for unknown names that suggest the closest known ones ("did you mean").

Every place that refuses a name (a rule, data set, model, family, variant, rule option, loss,
configuration key, ...) words its error with :func:`did_you_mean`, so a typo such as
``--rule alig-ada`` gets ``unknown rule 'alig-ada'; did you mean align-ada?`` wherever it is made.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: object, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` names of ``known`` close to ``name`` (:func:`difflib.get_close_matches`), best first."""
    if not isinstance(name, str):
        return []
    known = list(known)
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    # A different case or separator is the same name to a reader: "Align_Ada" is align-ada.
    folded = {k.lower().replace("_", "-"): k for k in known}
    same = folded.get(name.lower().replace("_", "-"))
    return [same] + [c for c in close if c != same] if same and same != name else close


def suggestion(name: object, known: Iterable[str]) -> str:
    """``did you mean a or b?`` for the names of ``known`` close to ``name``; empty when none is."""
    close = close_names(name, known)
    if not close:
        return ""
    names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"did you mean {names}?"


def did_you_mean(kind: str, name: object, known: Iterable[str]) -> str:
    """The message for an unknown ``name`` of ``kind`` (``"rule"``, ``"dataset"``, ...) among ``known``.

    ``unknown rule 'alig-ada'; did you mean align-ada?`` when some known names are close, else
    ``unknown rule 'x'; choose one of ...`` listing them all.
    """
    known = list(known)
    hint = suggestion(name, known)
    return f"unknown {kind} {name!r}; {hint or 'choose one of ' + ', '.join(known)}"
