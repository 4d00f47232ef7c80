"""Everything ``widealign bench`` measures, in one run: the figures a user compares.

* ``steps`` (:func:`~widealign.bench.steps.bench`): each rule's step against bp, bp against a bare
  PyTorch loop, and the fraction of the machine's measured matmul rate a bp step reaches;
* ``batched`` (:func:`~widealign.bench.batched.bench_batched`): K runs batched against the same K
  runs one after another, for bp and the Align rules;
* ``relaxation``: the relaxation rules' step time against bp and the iterations their relaxation
  ran (their ``step_stats``, where the rule reports them; else the configured iterations);
* ``memory`` (:func:`~widealign.bench.memory.memory_table`, on request): peak memory per rule
  against bp, measured in a fresh process where it fits and estimated beyond.

Also ``machine``: the load average before and after, the CPU count and torch's threads, so that a
figure taken on a busy machine says so.
"""

from __future__ import annotations

import inspect
import os
import platform
from collections.abc import Sequence
from typing import Any

import torch

from widealign.bench.batched import bench_batched
from widealign.bench.execution import bench_execution
from widealign.bench.memory import MEASURE_UP_TO, memory_table
from widealign.bench.steps import bench
from widealign.rules import RULES

SECTIONS = ("steps", "batched", "relaxation", "memory", "execution")
#: The rules whose batched runs the suite times.
BATCHED_RULES = ("bp", "align-zero", "align-ada")


def relaxation_rules() -> list[str]:
    """The rules that relax to a fixed point in an inner loop (they take ``iterations``)."""
    return [name for name, cls in RULES.items() if "iterations" in inspect.signature(cls.__init__).parameters]


def machine(device: str) -> dict[str, Any]:
    """What the figures were measured on, and how busy it was (load average, where known)."""
    info: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        info["loadavg"] = [float(v) for v in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        pass
    return info


def bench_suite(
    sections: Sequence[str] = ("steps", "batched", "relaxation"),
    model: str = "convnet",
    widths: Sequence[int] = (16, 64),
    rules: Sequence[str] = ("bp", "align-zero", "align-ada", "fa", "dfa"),
    preset: str = "kmnist",
    input_shape: Sequence[int] = (1, 28, 28),
    batch_size: int = 100,
    repeats: int = 10,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    members: int = 5,
    relaxation_repeats: int = 2,
    memory_widths: Sequence[int] = (256, 1024, 4096),
    measure_up_to: float = MEASURE_UP_TO,
    autocast: str | None = None,
) -> dict[str, Any]:
    """Run the named ``sections`` (of :data:`SECTIONS`) and return every figure in one dict."""
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown bench section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    out: dict[str, Any] = {"machine": machine(device)}
    common = {"model": model, "preset": preset, "input_shape": input_shape, "batch_size": batch_size,
              "device": device, "dtype": dtype}  # fmt: skip
    if "steps" in sections:
        out["steps"] = bench(widths=widths, rules=rules, repeats=repeats, autocast=autocast, **common)
    if "batched" in sections and model != "rnn":
        batched = [r for r in BATCHED_RULES if r in rules] or ["bp"]
        out["batched"] = bench_batched(members, widths=widths, rules=batched, repeats=repeats, **common)
    if "relaxation" in sections and model in ("convnet", "mlp"):
        relaxing = relaxation_rules()
        rows = bench(
            widths=[min(widths)], rules=["bp", *relaxing], repeats=relaxation_repeats, warmup=1, **common
        )
        out["relaxation"] = [r for r in rows if r["rule"] in relaxing]
    if "memory" in sections:
        dataset = {"kmnist": "kmnist", "digits": "digits"}.get(preset, "kmnist")
        out["memory"] = memory_table(memory_widths, rules, dataset, device, measure_up_to)
    if "execution" in sections and model == "convnet":
        execution_rules = [r for r in ("bp", "align-zero", "align-ada") if r in rules] or ["bp"]
        out["execution"] = bench_execution(
            widths=widths, rules=execution_rules, preset=preset, input_shape=input_shape,
            batch_size=batch_size, repeats=repeats, device=device, dtype=dtype,
        )  # fmt: skip
    out["machine_after"] = machine(device).get("loadavg")
    return out


def format_relaxation(rows: list[dict[str, Any]]) -> str:
    """One line per relaxation rule: ms per step, x bp, and the iterations its relaxation ran."""
    lines = ["relaxation rules: ms/step, x bp, iterations run in the last step (of the most allowed)"]
    for r in rows:
        its = r.get("relax_iterations")
        text = (
            f"{its:.0f} of {r.get('iterations', '?')}"
            if its is not None
            else f"{r.get('iterations', '?')} (fixed)"
        )
        lines.append(
            f"{r['width']:>6} {r['rule']:<22} {1000 * r['seconds']:>9.2f} {r['ratio_to_bp']:>6.2f}  "
            f"iterations {text}"
        )
    return "\n".join(lines)
