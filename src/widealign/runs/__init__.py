"""One run: its configuration (:mod:`.config`), its identity (:mod:`.identity`) and its execution,
results files and checkpoints (:mod:`.run`).

>>> from widealign.runs import RunConfig, train_run
>>> result = train_run(RunConfig(rule="align-ada", dataset="digits", width=64, epochs=5), out="results/r")
"""

from widealign.runs.config import DATASET_DEFAULTS, RunConfig, build_model, build_optimizer
from widealign.runs.run import read_result, train_run

__all__ = ["DATASET_DEFAULTS", "RunConfig", "build_model", "build_optimizer", "read_result", "train_run"]
