"""Deprecated: ``widealign.experiments`` was split into :mod:`widealign.runs`, :mod:`widealign.sweeps`,
:mod:`widealign.studies` and :mod:`widealign.bench`. This name re-exports :mod:`widealign.runs` for
one release and will then be removed."""

import warnings

from widealign.runs import DATASET_DEFAULTS, RunConfig, build_model, build_optimizer, read_result, train_run

warnings.warn(
    "widealign.experiments is deprecated: import from widealign.runs (one run), widealign.sweeps, "
    "widealign.studies or widealign.bench instead",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["DATASET_DEFAULTS", "RunConfig", "build_model", "build_optimizer", "read_result", "train_run"]
