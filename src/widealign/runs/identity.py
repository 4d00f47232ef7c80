"""A run's identity: the part of its configuration that makes two runs the same run.

Where and how a run executes (:data:`PLACEMENT_KEYS`: its ``device``, and ``compile``, whether its
forward pass is compiled) is not part of its identity: it
changes neither the run's folder name nor the check that a folder holds the same run, so a sweep
started on the CPU resumes on a GPU and the other way round (checkpoints load on any device).
"""

from __future__ import annotations

from typing import Any

#: Configuration keys that say where a run executes, not what it computes.
PLACEMENT_KEYS = ("device", "compile")


#: Configuration fields added after results were first recorded, with the value every run recorded
#: without them had. A field at that value is left out of a run's identity, so that older result
#: folders, checkpoints and run ids still match the runs that reproduce them.
ADDED_DEFAULTS: dict[str, Any] = {
    "autocast": None,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "schedule": "none",
    "step_size": None,
    "gamma": 0.1,
}


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without its :data:`PLACEMENT_KEYS` and without fields at their
    :data:`ADDED_DEFAULTS`: what makes two runs the same run."""
    return {
        k: v
        for k, v in config.items()
        if k not in PLACEMENT_KEYS and not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])
    }
