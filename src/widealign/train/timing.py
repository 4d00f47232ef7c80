"""Timing one training step: what benchmarks and run-time estimates measure."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from widealign.rules import Rule


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(rule: Rule, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step as timed: clear ``.grad``, the rule adds its update there, the optimiser applies it."""
    optimizer.zero_grad(set_to_none=True)
    rule.backward(x, y)
    optimizer.step()


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds that ``fn()`` takes on ``device``, its queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start
