"""Checks a learning rule can be run through: the ones every packaged rule passes
(:mod:`widealign.testing.conformance`), public so that a rule of one's own is held to the same
contract (``docs/add-a-rule.md``)."""

from widealign.testing.conformance import (
    check_accumulation,
    check_batched,
    check_half_batches,
    check_rule,
    check_state_round_trip,
    small_data,
    small_model,
)

__all__ = [
    "check_accumulation",
    "check_batched",
    "check_half_batches",
    "check_rule",
    "check_state_round_trip",
    "small_data",
    "small_model",
]
