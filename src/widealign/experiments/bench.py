"""Time one training step of every rule against backprop, on the same model and batch.

A step is ``rule.backward(x, y)`` followed by ``optimizer.step()``. Every rule starts from the
same initial network; rules are timed in interleaved rounds (bp, fa, ..., bp, fa, ...) so that
drift in the machine's speed affects all of them alike, and the median over rounds is reported
with its ratio to bp measured in the same process. Peak GPU memory is reported on CUDA.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from widealign.experiments.config import resolve_device
from widealign.models import MLP, ConvNet
from widealign.rules import RULES, Rule, make_rule


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(rule: Rule, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step as timed: the rule fills ``.grad``, the optimiser applies it."""
    rule.backward(x, y)
    optimizer.step()


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds that ``fn()`` takes on ``device``, its queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def bench(
    model: str = "convnet",
    widths: Sequence[int] = (64, 256),
    rules: Sequence[str] = tuple(RULES),
    preset: str = "kmnist",
    input_shape: Sequence[int] = (1, 28, 28),
    outputs: int = 10,
    batch_size: int = 100,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Median seconds per step of each rule at each width, and the ratio to bp."""
    if "bp" not in rules:
        rules = ["bp", *rules]
    dev = resolve_device(device)
    rows = []
    for width in widths:
        if model == "convnet":
            net = ConvNet.preset(preset, input_shape[0], outputs, width, seed=seed)
        elif model == "mlp":
            net = MLP(int(torch.tensor(input_shape).prod()), outputs, [width, width], seed=seed)
        else:
            raise ValueError(f"bench supports the convnet and the mlp, not {model!r}")
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch_size, *input_shape, generator=g).to(dev, dtype)
        y = torch.randn(batch_size, outputs, generator=g).to(dev, dtype)
        runs = {}
        for name in rules:
            m = copy.deepcopy(net).to(dev, dtype)
            runs[name] = (make_rule(name, m, seed=seed), torch.optim.SGD(m.parameters(), lr=1e-3))
        times: dict[str, list[float]] = {name: [] for name in rules}
        for _ in range(warmup + repeats):
            for name, (rule, opt) in runs.items():
                times[name].append(timed(dev, functools.partial(train_step, rule, opt, x, y)))
        base = statistics.median(times["bp"][warmup:])
        for name in rules:
            t = statistics.median(times[name][warmup:])
            rows.append({"model": model, "width": width, "rule": name, "seconds": t, "ratio_to_bp": t / base})
    return rows


def format_bench(rows: list[dict[str, Any]]) -> str:
    """One line per (width, rule): milliseconds per step and the ratio to bp."""
    lines = [f"{'width':>6} {'rule':<11} {'ms/step':>9} {'x bp':>6}"]
    for r in rows:
        lines.append(f"{r['width']:>6} {r['rule']:<11} {1000 * r['seconds']:>9.2f} {r['ratio_to_bp']:>6.2f}")
    return "\n".join(lines)
