"""Training: the loop, evaluation, checkpoints."""

from widealign.train.loop import DivergedError, EpochRecord, Trainer, evaluate, save_atomic

__all__ = ["DivergedError", "EpochRecord", "Trainer", "evaluate", "save_atomic"]
