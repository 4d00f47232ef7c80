"""Checks a learning rule can be run through: the ones every packaged rule passes
(:mod:`widealign.testing.conformance`), public so that a rule of one's own is held to the same
contract (``docs/add-a-rule.md``), and the weight-transport check
(:mod:`widealign.testing.transport`), which finds the current forward weights a rule reads."""

from widealign.testing.conformance import (
    check_accumulation,
    check_batched,
    check_half_batches,
    check_reads,
    check_rule,
    check_state_round_trip,
    small_data,
    small_model,
)
from widealign.testing.transport import SIGN, forward_weight_reads, read_kind

__all__ = [
    "SIGN",
    "check_accumulation",
    "check_batched",
    "check_half_batches",
    "check_reads",
    "check_rule",
    "check_state_round_trip",
    "forward_weight_reads",
    "read_kind",
    "small_data",
    "small_model",
]
