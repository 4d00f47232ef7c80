"""Time the opt-in ways of executing a step against the default: the native normalisation kernel
and a compiled forward pass.

For each width and rule the same network is trained four ways, timed in interleaved rounds in one
process: ``default``; ``native-norm`` (``norm="batch-axis-native"``: torch's batch-norm kernel for
the batch-axis normalisation, :class:`~widealign.models.layers.BatchAxisNorm`); ``compiled``
(:func:`~widealign.train.loop.compile_model`); and both. Each row gives the median seconds per
step, the ratio to the default's step, and for the compiled versions the seconds their first steps
took (compiling). Only the conv net has a normalisation to swap. Every compiled model here shares one
code object (the network's ``forward``), so the bench raises dynamo's recompile limit for its own
run (otherwise later models would silently run uncompiled).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Sequence
from typing import Any

import torch

from widealign.bench.steps import _autocast_step, _check_bench, _interleaved
from widealign.models import ConvNet
from widealign.rules import make_rule
from widealign.runs.config import resolve_device
from widealign.train.loop import compile_model

#: The four ways of executing a step: (native normalisation, compiled forward pass).
EXECUTIONS: dict[str, tuple[bool, bool]] = {
    "default": (False, False),
    "native-norm": (True, False),
    "compiled": (False, True),
    "native-norm+compiled": (True, True),
}


def bench_execution(
    widths: Sequence[int] = (16, 64),
    rules: Sequence[str] = ("bp", "align-zero", "align-ada"),
    preset: str = "kmnist",
    input_shape: Sequence[int] = (1, 28, 28),
    outputs: int = 10,
    batch_size: int = 100,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    executions: Sequence[str] = tuple(EXECUTIONS),
) -> list[dict[str, Any]]:
    """One row per width, rule and execution: ``seconds`` per step (median of ``repeats``
    interleaved rounds after ``warmup``), ``ratio_to_default`` and, compiled, ``compile_seconds``
    (the wall time of the warm-up steps, which include compiling)."""
    _check_bench(widths, input_shape, batch_size, repeats, "convnet")
    unknown = [e for e in executions if e not in EXECUTIONS]
    if unknown:
        raise ValueError(f"unknown execution {unknown[0]!r}; choose from {', '.join(EXECUTIONS)}")
    if "default" not in executions:
        executions = ["default", *executions]
    dev = resolve_device(device)
    with torch._dynamo.config.patch(recompile_limit=256):
        return _bench_execution(widths, rules, preset, input_shape, outputs, batch_size, repeats, warmup,
                                dev, dtype, seed, executions)  # fmt: skip


def _bench_execution(
    widths: Sequence[int],
    rules: Sequence[str],
    preset: str,
    input_shape: Sequence[int],
    outputs: int,
    batch_size: int,
    repeats: int,
    warmup: int,
    dev: torch.device,
    dtype: torch.dtype,
    seed: int,
    executions: Sequence[str],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for width in widths:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch_size, *input_shape, generator=g).to(dev, dtype)
        y = torch.randn(batch_size, outputs, generator=g).to(dev, dtype)
        nets = {
            native: ConvNet.preset(
                preset, input_shape[0], outputs, width, seed=seed,
                norm="batch-axis-native" if native else "batch-axis",
            )
            for native in (False, True)
        }  # fmt: skip
        for name in rules:
            steps, first = {}, {}
            for execution in executions:
                native, compiled = EXECUTIONS[execution]
                model = copy.deepcopy(nets[native]).to(dev, dtype)
                if compiled:
                    compile_model(model)
                rule = make_rule(name, model, seed=seed)
                opt = torch.optim.SGD(model.parameters(), lr=1e-3)
                steps[execution] = functools.partial(_autocast_step, None, rule, opt, x, y)
                start = time.perf_counter()
                steps[execution]()
                first[execution] = time.perf_counter() - start
            times = _interleaved(steps, dev, warmup, repeats)
            for execution in executions:
                row = {"width": width, "rule": name, "execution": execution, "seconds": times[execution],
                       "ratio_to_default": times[execution] / times["default"]}  # fmt: skip
                if EXECUTIONS[execution][1]:
                    row["compile_seconds"] = first[execution]
                rows.append(row)
    return rows


def format_execution(rows: list[dict[str, Any]]) -> str:
    """A table: ms per step and the ratio to the default execution, per width, rule and execution."""
    lines = ["execution: ms/step, x the default step (first step's seconds when compiled)"]
    for r in rows:
        extra = f"  first step {r['compile_seconds']:.1f} s" if "compile_seconds" in r else ""
        lines.append(
            f"{r['width']:>6} {r['rule']:<12} {r['execution']:<22} {1000 * r['seconds']:>9.2f} "
            f"{r['ratio_to_default']:>6.2f}{extra}"
        )
    return "\n".join(lines)
