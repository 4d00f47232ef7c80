"""Training: the loop, evaluation, checkpoints."""

from widealign.train.loop import BatchIterables, DivergedError, EpochRecord, Trainer, evaluate, save_atomic

__all__ = ["BatchIterables", "DivergedError", "EpochRecord", "Trainer", "evaluate", "save_atomic"]
