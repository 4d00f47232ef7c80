"""Experiments: run configurations, single runs, rule comparisons and benchmarks."""

from widealign.experiments.config import DATASET_DEFAULTS, RunConfig, build_model, build_optimizer
from widealign.experiments.run import read_result, train_run

__all__ = ["DATASET_DEFAULTS", "RunConfig", "build_model", "build_optimizer", "read_result", "train_run"]
